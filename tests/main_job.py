"""Helpers for tests that run the main job as a separate process: a small dataset, settings, a reference run.

The dataset and the reference run are made once per test session under pytest's base temporary folder,
so that every test comparing against an uninterrupted run shares one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from kaggle_sf.data.synthetic import generate_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
MOBILENET_WEIGHTS = REPOSITORY.parent / "shared" / "data" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
COMPETITION_ZIP = "state-farm-distracted-driver-detection.zip"

SETTINGS = ("train.mode=head", "folds.n_splits=3", "backbones.0.input_size=[64, 64]", "train.head.max_epochs=5",
            "train.head.patience=2", "features.batch_size=16", "explain.enabled=false", "search.enabled=false",
            "submit.enabled=false")
"""A main job of a few CPU seconds: 80 train frames of 4 drivers, 20 test frames, 3 folds, 64x64 inputs, a
head on cached features. Every key that decides the job's cost is set here, whatever the default config sets."""

JOB_TIMEOUT_S = 300


def keras_home(base: Path) -> Path:
    """Return a KERAS_HOME holding the MobileNet-0.25 ImageNet weights; skips the test without them."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"{MOBILENET_WEIGHTS} not present")
    home = base / "keras_home"
    if not (home / "models" / MOBILENET_WEIGHTS.name).is_file():
        (home / "models").mkdir(parents=True, exist_ok=True)
        shutil.copy(MOBILENET_WEIGHTS, home / "models" / MOBILENET_WEIGHTS.name)
    return home


def synthetic_competition(base: Path) -> Path:
    """Return an extracted synthetic dataset of 4 train drivers and 1 test driver, 2 frames per class."""
    folder = base / "synthetic"
    if not folder.is_dir():
        generate_dataset(folder, n_train_subjects=4, n_test_subjects=1, frames_per_class=2, image_size=(64, 48))
    return folder


def zip_competition(extracted: Path, destination: Path) -> Path:
    """Pack a dataset as Kaggle shipped State Farm: one zip holding imgs.zip and the zipped tables."""
    destination.mkdir(parents=True)
    images = destination / "imgs.zip"
    with zipfile.ZipFile(images, "w") as archive:
        for path in sorted((extracted / "train").rglob("*.jpg")) + sorted((extracted / "test").glob("*.jpg")):
            archive.write(path, str(path.relative_to(extracted)))
    with zipfile.ZipFile(destination / COMPETITION_ZIP, "w") as archive:
        archive.write(images, "imgs.zip")
        for table in ("driver_imgs_list.csv", "sample_submission.csv"):
            with zipfile.ZipFile(destination / f"{table}.zip", "w") as inner:
                inner.write(extracted / table, table)
            archive.write(destination / f"{table}.zip", f"{table}.zip")
            (destination / f"{table}.zip").unlink()
    images.unlink()
    return destination


def job_environment(home: Path, crash_at: str | None = None) -> dict[str, str]:
    """Return the environment of a main job: this one, with the weights cache and no tracking server."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MLFLOW_TRACKING_URI", "KAGGLE_SF_CRASH_AT")}
    environment.update(KERAS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if crash_at is not None:
        environment["KAGGLE_SF_CRASH_AT"] = crash_at
    return environment


def settings_arguments(extra: Sequence[str] = ()) -> list[str]:
    """Return ``--set`` arguments for :data:`SETTINGS` followed by ``extra`` settings."""
    return [argument for setting in (*SETTINGS, *extra) for argument in ("--set", setting)]


def main_job_command(data_dir: Path, work_dir: Path, run_name: str, extra: Sequence[str] = ()) -> list[str]:
    """Return the command line of the main job with :data:`SETTINGS` and ``extra`` settings."""
    return [sys.executable, "-m", "pipelines.full_run", "--data-dir", str(data_dir), "--work-dir", str(work_dir),
            "--set", f"run_name={run_name}", *settings_arguments(extra)]


def run_main_job(data_dir: Path, work_dir: Path, home: Path, *, run_name: str = "crash",
                 crash_at: str | None = None, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run the main job to its end (or its crash point) and return the finished process with its output."""
    return subprocess.run(main_job_command(data_dir, work_dir, run_name, extra), cwd=REPOSITORY,
                          env=job_environment(home, crash_at), capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S, check=False)


def reference_submission(base: Path) -> pd.DataFrame:
    """Return the submission of an uninterrupted main job on :func:`synthetic_competition`, run once."""
    work_dir = base / "reference_work"
    submission = work_dir / "submissions" / "reference.csv"
    if not submission.is_file():
        finished = run_main_job(synthetic_competition(base), work_dir, keras_home(base), run_name="reference")
        assert finished.returncode == 0, finished.stderr[-3000:]
    return pd.read_csv(submission)


def assert_same_submission(path: Path, reference: pd.DataFrame) -> None:
    """Check that the submission at ``path`` has the reference's ids and probabilities.

    Two uninterrupted runs of this job have differed in the ninth decimal place, so probabilities are
    compared to 1e-6.
    """
    submission = pd.read_csv(path)
    assert list(submission.columns) == list(reference.columns)
    assert submission["img"].tolist() == reference["img"].tolist()
    difference = (submission.iloc[:, 1:] - reference.iloc[:, 1:]).abs().to_numpy().max()
    assert difference < 1e-6


def temporary_files(folder: Path) -> list[str]:
    """Return the temporary files that atomic writes left under ``folder``, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".tmp-*"))


def stored_runs(work_dir: Path, experiment_name: str) -> list:
    """Return every run of an experiment in the work directory's MLflow store.

    A client with its own URI leaves this process's tracking URI alone; ``mlflow.set_tracking_uri``
    would also set ``MLFLOW_TRACKING_URI`` for the rest of the test session.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work_dir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name)
    return list(client.search_runs([experiment.experiment_id], max_results=1000))
