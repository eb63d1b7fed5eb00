"""Run the main job: competition files to a tracked submission.

    python -m pipelines.full_run [--config FILE] [--data-dir DIR] [--work-dir DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.common import add_config_argument, main_guard, resolve_config_path, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.full_run", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="competition files: zip, imgs.zip or extracted folders (default: data/)")
    parser.add_argument("--work-dir", type=Path, default=Path("."),
                        help="where mlruns/, cache/ and submissions/ go (default: current directory)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set folds.n_splits=4 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf.config import load_config

    config_path = resolve_config_path(args.config)
    config = load_config(config_path, args.overrides)

    from kaggle_sf.run import run

    result = run(config, args.data_dir, args.work_dir, config_path)
    scored = f"; test log loss {result.test_log_loss:.4f}" if result.test_log_loss is not None else ""
    held_out = f", held-out {result.held_out_log_loss:.4f}" if result.held_out_log_loss is not None else ""
    print(f"Out-of-fold log loss {result.oof_log_loss:.4f} ({result.ensemble_chosen}{held_out}){scored}; "
          f"submission {result.submission_path} (MLflow run {result.run_id})")
    return 0


if __name__ == "__main__":
    main_guard(main)
