"""Concurrent jobs on one work directory: they wait for each other's locks, log the holder, corrupt nothing."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import filelock
import pytest

from kaggle_sf.lock import exclusive, owner_path, read_owner
from tests.main_job import (
    REPOSITORY,
    assert_same_submission,
    job_environment,
    keras_home,
    main_job_command,
    reference_submission,
    stored_runs,
    synthetic_competition,
    temporary_files,
)

HOLDER = textwrap.dedent("""
    import sys, time
    from kaggle_sf.lock import exclusive
    with exclusive(sys.argv[1], "testing"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def start_holder(lock_path: Path, hold_s: float) -> subprocess.Popen:
    """Start a process that holds ``lock_path`` for ``hold_s`` seconds; return once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path), str(hold_s)], cwd=REPOSITORY,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def wait_for_text(path: Path, text: str, timeout_s: float = 180) -> None:
    """Wait until the file at ``path`` contains ``text``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not show {text!r} within {timeout_s} s:\n{path.read_text()[-3000:]}")


# --- Locks -----------------------------------------------------------------------------------------


def test_waiting_process_names_lock_file_and_holder(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    lock_path = tmp_path / "features.h5.lock"
    holder = start_holder(lock_path, hold_s=1.5)

    with caplog.at_level(logging.INFO, logger="kaggle_sf.lock"), exclusive(lock_path, "reading"):
        assert read_owner(lock_path).pid == os.getpid()
    assert holder.wait(timeout=30) == 0
    assert f"Waiting for lock {lock_path}, held by pid {holder.pid} on {socket.gethostname()} (testing)" \
        in caplog.text
    assert f"Acquired lock {lock_path} after waiting" in caplog.text
    assert not owner_path(lock_path).exists()


def test_lock_of_killed_holder_is_free_at_once(tmp_path: Path):
    lock_path = tmp_path / "fold_0.lock"
    holder = start_holder(lock_path, hold_s=60)
    assert read_owner(lock_path).pid == holder.pid

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The killed holder's owner file is left behind, names a dead process and is ignored.
    assert owner_path(lock_path).is_file()
    assert read_owner(lock_path) is None
    with filelock.FileLock(str(lock_path)).acquire(timeout=5):
        pass


# --- The MLflow store ------------------------------------------------------------------------------


TRACKER = textwrap.dedent("""
    import sys
    import mlflow
    from kaggle_sf import tracking
    from kaggle_sf.lock import exclusive, work_dir_lock
    work_dir, name = sys.argv[1], sys.argv[2]
    # As the main job does it:
    tracking.configure_tracking(work_dir)
    with exclusive(work_dir_lock(work_dir, "mlflow-store"), "creating the MLflow store"):
        experiment = tracking.experiment_id("shared", work_dir)
    for number in range(8):
        with mlflow.start_run(run_name=f"{name}-{number}", experiment_id=experiment) as run:
            tracking.log_params(run.info.run_id, {f"param_{i}": i for i in range(20)})
            tracking.log_history(run.info.run_id, {"loss": [1.0 / (1 + e) for e in range(30)]})
""")


def test_mlflow_store_is_shared_by_concurrent_processes(tmp_path: Path):
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    processes = [subprocess.Popen([sys.executable, "-c", TRACKER, str(tmp_path), name], cwd=REPOSITORY,
                                  env=environment, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors

    runs = stored_runs(tmp_path, "shared")
    assert len(runs) == 16
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert sorted(run.info.run_name for run in runs) == sorted(f"{name}-{n}" for name in "ab" for n in range(8))
    assert all(run.data.params["param_19"] == "19" for run in runs)
    assert all(len(run.data.metrics) == 1 for run in runs)


# --- Two main jobs ---------------------------------------------------------------------------------


def test_two_main_jobs_share_one_work_dir(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    home = keras_home(base)
    reference = reference_submission(base)
    data_dir = synthetic_competition(base)
    work_dir = tmp_path_factory.mktemp("shared_work")
    logs = {name: work_dir.parent / f"{work_dir.name}-{name}.log" for name in ("a", "b")}

    # Both jobs need the same train features. The test holds their lock until both wait for it. After
    # its release, one job extracts the features while the other waits for that job.
    [features_file] = (base / "reference_work" / "cache" / "features").glob("*-train-*.h5")
    lock_path = work_dir / "cache" / "features" / f"{features_file.name}.lock"
    jobs: dict[str, subprocess.Popen] = {}
    with contextlib.ExitStack() as held:
        held.enter_context(exclusive(lock_path, "holding both jobs back"))
        for name, log in logs.items():
            with open(log, "w") as stderr:
                jobs[name] = subprocess.Popen(main_job_command(data_dir, work_dir, name), cwd=REPOSITORY,
                                              env=job_environment(home), stderr=stderr, stdout=subprocess.DEVNULL)
        for log in logs.values():
            wait_for_text(log, f"Waiting for lock {lock_path}, held by pid {os.getpid()}")

    for job in jobs.values():
        job.wait(timeout=600)
    output = {name: log.read_text() for name, log in logs.items()}
    assert [job.returncode for job in jobs.values()] == [0, 0], output

    extracting = [name for name in jobs if "Extracting mobilenet_0.25_64x64 features of 80 train" in output[name]]
    assert len(extracting) == 1
    [waiting] = set(jobs) - set(extracting)
    assert f"Waiting for lock {lock_path}, held by pid {jobs[extracting[0]].pid}" in output[waiting]
    assert "Reusing cached mobilenet_0.25_64x64 features of 80 train images" in output[waiting]

    # Each fold model is trained by one job and reused by the other.
    trained = [line for text in output.values() for line in text.splitlines() if "kaggle_sf.train: Fold " in line]
    reused = [line for text in output.values() for line in text.splitlines() if "Reusing finished" in line]
    assert len(trained) == 3
    assert len(reused) == 3

    for name in jobs:
        assert_same_submission(work_dir / "submissions" / f"{name}.csv", reference)
    features = [p for p in (work_dir / "cache" / "features").glob("*.h5") if not p.name.startswith(".")]
    assert len(features) == 2
    assert temporary_files(work_dir) == []

    runs = stored_runs(work_dir, "state-farm-distracted-driver-detection")
    assert {run.info.status for run in runs} == {"FINISHED"}
    parents = [run.info.run_name for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert sorted(parents) == ["a", "b"]
