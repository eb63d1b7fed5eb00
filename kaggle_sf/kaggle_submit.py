"""Kaggle submissions: choose the file, check and compress it, upload it, wait for the score, record it.

The file is the ``submission/`` artifact of an MLflow parent run (by default the latest run with an
``oof_log_loss`` metric) or a CSV given by path. It is validated against ``sample_submission.csv`` and
gzip-compressed before upload. The scores land on the run that produced the file: metrics
``public_score`` and ``private_score``, tags ``kaggle_submission_id``, ``kaggle_submission_status``
and ``kaggle_competition``.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kaggle_sf.atomic import atomic_path
from kaggle_sf.kaggle_client import (
    COMPETITION_URL,
    KaggleClient,
    Submission,
    SubmissionRejectedError,
    check_competition_slug,
)
from kaggle_sf.submission import SubmissionError, read_submission, validate_submission
from kaggle_sf.tracking import tracking_uri as default_tracking_uri

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 10.0
SUBMISSION_ARTIFACT_FOLDER = "submission"
SAMPLE_SUBMISSION_NAMES = ("sample_submission.csv", "sample_submission.csv.zip")


class SubmissionSourceError(ValueError):
    """The file to submit cannot be found: no such file, MLflow store, run, or submission artifact."""


@dataclass(frozen=True)
class SubmissionPlan:
    """A submission ready for upload, with the MLflow run that produced it (None for a plain file)."""

    competition: str
    upload_path: Path
    size_bytes: int
    message: str
    run_id: str | None = None
    tracking_uri: str | None = None


# --- The file to submit --------------------------------------------------------------------------


def find_sample_submission(data_dir: Path) -> Path:
    """Return ``sample_submission.csv`` (or ``.csv.zip``) in ``data_dir``.

    Raises:
        SubmissionSourceError: neither file exists.
    """
    for name in SAMPLE_SUBMISSION_NAMES:
        path = Path(data_dir) / name
        if path.is_file():
            return path
    raise SubmissionSourceError(f"sample_submission.csv (or .csv.zip) not found in {data_dir}; pass --data-dir "
                                "with the competition files, or download them with python -m pipelines.fetch_data")


def read_sample_ids(path: Path) -> list[str]:
    """Return the ``img`` column of ``sample_submission.csv``: the test ids a submission must cover."""
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as error:
        raise SubmissionError(f"{path} could not be read as CSV: {error}") from error
    if "img" not in table.columns:
        raise SubmissionError(f"{path} has no img column; found {', '.join(map(str, table.columns))}")
    return table["img"].dropna().str.strip().tolist()


def _mlflow_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    # Opening a SQLite URI creates an empty store; a missing one means the wrong --work-dir.
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.is_file():
            raise SubmissionSourceError(f"no MLflow store at {database}; pass the --work-dir of the run, "
                                        "or the submission CSV with --file")
    return MlflowClient(tracking_uri)


def find_run(tracking_uri: str, run_id: str | None = None):
    """Return the MLflow run ``run_id``, or when None, the latest run with an ``oof_log_loss`` metric.

    Raises:
        SubmissionSourceError: no such run, or no run with that metric.
    """
    from mlflow.exceptions import MlflowException

    client = _mlflow_client(tracking_uri)
    if run_id is not None:
        try:
            return client.get_run(run_id)
        except MlflowException as error:
            raise SubmissionSourceError(f"MLflow run {run_id} not found in {tracking_uri}; "
                                        "copy the id from mlflow ui, or pass --file") from error

    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="metrics.oof_log_loss >= 0",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not runs:
        raise SubmissionSourceError(f"no MLflow run with an oof_log_loss metric in {tracking_uri}; "
                                    "run python -m pipelines.full_run first, or pass --run-id or --file")
    logger.info("Submitting the latest run: %s (%s)", runs[0].info.run_name, runs[0].info.run_id)
    return runs[0]


def download_run_submission(run, tracking_uri: str, folder: Path) -> Path:
    """Download the submission CSV that ``run`` logged under ``submission/`` into ``folder``.

    Raises:
        SubmissionSourceError: the run has no submission CSV, or more than one.
    """
    import mlflow

    client = _mlflow_client(tracking_uri)
    run_id = run.info.run_id
    candidates = [item.path for item in client.list_artifacts(run_id, SUBMISSION_ARTIFACT_FOLDER)
                  if not item.is_dir and item.path.endswith((".csv", ".csv.gz"))]
    plain = [path for path in candidates if path.endswith(".csv")]
    chosen = plain if plain else candidates
    if len(chosen) != 1:
        found = ", ".join(candidates) or "nothing"
        raise SubmissionSourceError(f"MLflow run {run_id} should hold one submission CSV under "
                                    f"{SUBMISSION_ARTIFACT_FOLDER}/, found {found}; pass the file with --file")
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=chosen[0], dst_path=str(folder),
                                                tracking_uri=tracking_uri)
    return Path(local)


def compress_submission(source: Path, folder: Path) -> Path:
    """Write ``source`` gzip-compressed as ``<folder>/<name>.csv.gz`` (atomically) and return that path.

    A source that is already ``.gz`` is copied; one that is already the target is left alone.
    """
    source = Path(source)
    name = source.name.removesuffix(".gz")
    target = Path(folder) / f"{name}.gz"
    if target.exists() and target.resolve() == source.resolve():
        return target

    with atomic_path(target) as temporary:
        if source.name.endswith(".gz"):
            shutil.copyfile(source, temporary)
        else:
            # A fixed mtime makes the same CSV compress to the same bytes.
            with open(source, "rb") as plain, open(temporary, "wb") as raw, \
                    gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=0) as compressed:
                shutil.copyfileobj(plain, compressed)
    return target


def default_message(run_name: str, run_id: str, oof_log_loss: float | None) -> str:
    """Return the submission description for a run: its name, MLflow run id and out-of-fold log loss."""
    loss = f", OOF log loss {oof_log_loss:.5f}" if oof_log_loss is not None else ""
    return f"{run_name} (MLflow run {run_id}{loss})"


def _validate_file(source: Path, sample_ids: list[str], label: str) -> None:
    try:
        frame = read_submission(source)
    except SubmissionError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as error:
        raise SubmissionError(f"{label} could not be read as CSV: {error}") from error
    validate_submission(frame, sample_ids, source=label)


def plan_submission(competition: str, data_dir: Path, work_dir: Path, *, run_id: str | None = None,
                    file: Path | None = None, message: str | None = None,
                    tracking_uri: str | None = None) -> SubmissionPlan:
    """Choose, validate and compress the file to submit, reading only local files and the MLflow store.

    Args:
        competition: the competition slug.
        data_dir: holds ``sample_submission.csv``.
        work_dir: the compressed file goes to ``<work_dir>/submissions/``; its MLflow store is used
            unless ``tracking_uri`` is given.
        run_id: the MLflow run whose ``submission/`` artifact to submit.
        file: a submission CSV (plain or ``.gz``) to submit instead of a run's.
        message: the submission description; by default the run's name, id and OOF log loss.
        tracking_uri: the MLflow store; by default ``kaggle_sf.tracking.tracking_uri(work_dir)``.

    Raises:
        SubmissionSourceError: the file, store, run or artifact does not exist.
        SubmissionError: the file does not match ``sample_submission.csv``.
    """
    check_competition_slug(competition)
    if run_id is not None and file is not None:
        raise ValueError("pass either run_id or file, not both")
    sample_ids = read_sample_ids(find_sample_submission(data_dir))
    submissions_dir = Path(work_dir) / "submissions"

    if file is not None:
        source = Path(file)
        if not source.is_file():
            raise SubmissionSourceError(f"submission file {source} not found")
        _validate_file(source, sample_ids, str(source))
        upload_path = compress_submission(source, submissions_dir)
        return SubmissionPlan(competition=competition, upload_path=upload_path,
                              size_bytes=upload_path.stat().st_size, message=message or source.name)

    tracking_uri = tracking_uri or default_tracking_uri(Path(work_dir))
    run = find_run(tracking_uri, run_id)
    with tempfile.TemporaryDirectory() as scratch:
        source = download_run_submission(run, tracking_uri, Path(scratch))
        _validate_file(source, sample_ids, f"MLflow run {run.info.run_id} artifact {source.name}")
        upload_path = compress_submission(source, submissions_dir)

    message = message or default_message(run.info.run_name, run.info.run_id, run.data.metrics.get("oof_log_loss"))
    return SubmissionPlan(competition=competition, upload_path=upload_path, size_bytes=upload_path.stat().st_size,
                          message=message, run_id=run.info.run_id, tracking_uri=tracking_uri)


# --- Upload and score ----------------------------------------------------------------------------


def wait_for_score(client: KaggleClient, competition: str, ref: int, *, timeout: float = DEFAULT_TIMEOUT,
                   poll_interval: float = DEFAULT_POLL_INTERVAL, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> Submission:
    """Poll the competition's submissions list until submission ``ref`` is scored or ``timeout`` passes.

    Returns:
        The submission: status ``"complete"`` with its scores, or ``"pending"`` when the timeout passed.

    Raises:
        SubmissionRejectedError: Kaggle could not score the submission.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds; received {timeout}")
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds; received {poll_interval}")

    deadline = clock() + timeout
    while True:
        # A new submission may take a moment to appear in the list; until then it counts as pending.
        submission = next((entry for entry in client.list_submissions(competition) if entry.ref == ref), None)
        if submission is not None and submission.status == "complete":
            return submission
        if submission is not None and submission.status == "error":
            raise SubmissionRejectedError(f"Kaggle could not score submission {ref} to '{competition}': "
                                          f"{submission.error_description or 'no reason given'}")
        if clock() + poll_interval > deadline:
            return submission or Submission(ref=ref, status="pending")
        logger.info("Submission %d is %s; checking again in %g s", ref,
                    submission.status if submission else "not listed yet", poll_interval)
        sleep(poll_interval)


def record_submission(run_id: str, tracking_uri: str, competition: str, submission: Submission) -> None:
    """Record a submission on its MLflow run: id, status and competition as tags, scores as metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, "kaggle_submission_id", str(submission.ref))
    client.set_tag(run_id, "kaggle_submission_status", submission.status)
    client.set_tag(run_id, "kaggle_competition", competition)
    if submission.public_score is not None:
        client.log_metric(run_id, "public_score", submission.public_score)
    if submission.private_score is not None:
        client.log_metric(run_id, "private_score", submission.private_score)


def upload_and_wait(plan: SubmissionPlan, client: KaggleClient, *, timeout: float = DEFAULT_TIMEOUT,
                    poll_interval: float = DEFAULT_POLL_INTERVAL,
                    sleep: Callable[[float], None] = time.sleep) -> Submission:
    """Upload a planned submission, wait for its score and record it on the plan's MLflow run.

    The submission id is recorded right after the upload, so a timeout or a scoring error still
    leaves it on the run.

    Returns:
        The submission, scored (``"complete"``) or still ``"pending"`` when ``timeout`` passed.

    Raises:
        SubmissionRejectedError: the upload or the scoring failed.
        KaggleError: credentials, rules, slug or network problems.
    """
    logger.info("Uploading %s (%d bytes) to %s", plan.upload_path.name, plan.size_bytes, plan.competition)
    ref = client.submit(plan.competition, plan.upload_path, plan.message)
    logger.info("Kaggle accepted submission %d; waiting up to %g s for its score", ref, timeout)

    def record(submission: Submission) -> None:
        if plan.run_id is not None:
            record_submission(plan.run_id, plan.tracking_uri, plan.competition, submission)

    record(Submission(ref=ref, status="pending"))
    try:
        submission = wait_for_score(client, plan.competition, ref, timeout=timeout, poll_interval=poll_interval,
                                    sleep=sleep)
    except SubmissionRejectedError:
        record(Submission(ref=ref, status="error"))
        raise
    record(submission)
    return submission


def submissions_page(competition: str) -> str:
    """Return the address of the user's submissions page for ``competition``."""
    return COMPETITION_URL.format(competition=competition) + "/submissions"
