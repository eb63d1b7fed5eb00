"""Submit predictions to Kaggle, wait for the score and record it on the MLflow run that made them.

    python -m pipelines.submit [--run-id ID | --file CSV] [--message TEXT] [--dry-run] [--data-dir DIR]
                               [--work-dir DIR] [--timeout SECONDS]

Without --run-id or --file, submits the latest MLflow run with an out-of-fold log loss. The file is
checked against sample_submission.csv and gzip-compressed first; --dry-run stops there and prints what
would be sent, without contacting Kaggle or needing credentials.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.common import main_guard, setup_logging

DEFAULT_COMPETITION = "state-farm-distracted-driver-detection"


def _positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds; received {text}")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds; received {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from kaggle_sf.kaggle_submit import DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT

    parser = argparse.ArgumentParser(prog="python -m pipelines.submit", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-id", help="MLflow run whose submission/ artifact to submit (default: the latest run)")
    source.add_argument("--file", type=Path, help="a submission CSV (plain or .gz) to submit instead of a run's")
    parser.add_argument("--message", help="submission description (default: run name, run id and OOF log loss)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print what would be sent, without contacting Kaggle")
    parser.add_argument("--competition", default=DEFAULT_COMPETITION, metavar="SLUG",
                        help=f"Kaggle competition slug (default: {DEFAULT_COMPETITION})")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder with sample_submission.csv (default: data/)")
    parser.add_argument("--work-dir", type=Path, default=Path("."),
                        help="folder with mlruns/ and submissions/ (default: current directory)")
    parser.add_argument("--timeout", type=_non_negative_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for the score, in seconds (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--poll-interval", type=_positive_seconds, default=DEFAULT_POLL_INTERVAL,
                        metavar="SECONDS",
                        help=f"seconds between checks of the submissions list (default: {DEFAULT_POLL_INTERVAL:g})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf import kaggle_submit
    from kaggle_sf.kaggle_client import KaggleClient, KaggleError, require_credentials
    from kaggle_sf.submission import SubmissionError

    try:
        if not args.dry_run:
            require_credentials()
        plan = kaggle_submit.plan_submission(args.competition, args.data_dir, args.work_dir, run_id=args.run_id,
                                             file=args.file, message=args.message)
        if args.dry_run:
            print("Dry run: nothing was sent to Kaggle. Would submit:\n"
                  f"  file:        {plan.upload_path}\n"
                  f"  size:        {plan.size_bytes} bytes\n"
                  f"  message:     {plan.message}\n"
                  f"  competition: {plan.competition}")
            return 0
        submission = kaggle_submit.upload_and_wait(plan, KaggleClient(), timeout=args.timeout,
                                                   poll_interval=args.poll_interval)
    except (KaggleError, SubmissionError, kaggle_submit.SubmissionSourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    recorded = f" (recorded on MLflow run {plan.run_id})" if plan.run_id else ""
    if submission.status != "complete":
        print(f"Submission {submission.ref} is still being scored after {args.timeout:g} s; "
              f"see {kaggle_submit.submissions_page(plan.competition)}{recorded}")
        return 0
    private = f", private score {submission.private_score}" if submission.private_score is not None else ""
    print(f"Submission {submission.ref} scored: public score {submission.public_score}{private}{recorded}")
    return 0


if __name__ == "__main__":
    main_guard(main, interrupted="Interrupted.")
