"""Optuna's distributed mode on a real PostgreSQL server: worker processes sharing one study.

The server is the one at KAGGLE_SF_TEST_POSTGRES_URL (an SQLAlchemy URL; each test uses its own study
names), or else a throwaway cluster that the tests create with initdb and pg_ctl from Debian's postgresql
package, listening on a loopback port. As root the cluster runs as the ``postgres`` user, because initdb
rejects root. Without either the tests skip with the reason, unless KAGGLE_SF_REQUIRE_POSTGRES=1 (set by CI
after it installed PostgreSQL), which turns the skip into a failure.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
URL_VARIABLE = "KAGGLE_SF_TEST_POSTGRES_URL"
REQUIRED = os.environ.get("KAGGLE_SF_REQUIRE_POSTGRES") == "1"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when CI installed PostgreSQL and the tests still cannot use it."""
    if REQUIRED:
        pytest.fail(f"KAGGLE_SF_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def server_binaries() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or initdb's folder on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_environment() -> dict[str, str]:
    """Return the environment of a search subprocess: quiet TensorFlow, and no MLFLOW_TRACKING_URI.

    ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI (MLflow 3.17), so an earlier test in this
    process would otherwise send the subprocess's runs to that test's store.
    """
    environment = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return environment


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """An SQLAlchemy URL of a PostgreSQL database for studies."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[test]')")
    if os.environ.get(URL_VARIABLE):
        yield os.environ[URL_VARIABLE]
        return

    binaries = server_binaries()
    if binaries is None:
        unavailable(f"no PostgreSQL server found: install Debian's postgresql package (apt-get install "
                    f"postgresql) or set {URL_VARIABLE} to a database URL")
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and initdb refuses root, but there is no 'postgres' user to run it as")
        run_as = ["runuser", "-u", "postgres", "--"]

    # The cluster lives in its own folder, owned by the user that runs the server.
    folder = Path(tempfile.mkdtemp(prefix="kaggle_sf_postgres_"))
    password = secrets.token_hex(16)
    (folder / "password").write_text(password)
    if run_as:
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(folder / "password", "postgres", "postgres")
    data, port = folder / "data", free_port()
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} -c fsync=off "
               "-c max_connections=50")
    try:
        subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "kaggle_sf", "--auth=scram-sha-256",
                        f"--pwfile={folder / 'password'}", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(folder / "server.log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, text=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log = (folder / "server.log").read_text() if (folder / "server.log").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(f"could not start a PostgreSQL cluster: {error}; {getattr(error, 'stderr', '')} {log}")
    try:
        yield f"postgresql+psycopg2://kaggle_sf:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# A worker: the study code of the search with a cheap objective, so two of them run side by side
# without two TensorFlow processes. Each trial sleeps so that the workers' trials interleave.
WORKER = textwrap.dedent("""
    import json, math, sys, time
    from kaggle_sf.config import SearchConfig
    from kaggle_sf.search.studies import finished_trials, open_study, run_study

    url, name, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    study = open_study(url, name, SearchConfig(n_startup_trials=3, pruner="none"))

    def objective(trial):
        rate = trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
        time.sleep(0.3)
        return (math.log10(rate) + 3) ** 2

    progress = run_study(study, objective, n_trials=budget, timeout_s=120)
    print(json.dumps({"ran": list(progress.trial_numbers),
                      "workers_seen": sorted({t.user_attrs["worker"] for t in finished_trials(study)})}))
""")


def test_two_workers_share_one_study(postgres_url):
    name = f"shared-{secrets.token_hex(4)}"
    budget = 12
    environment = {**subprocess_environment(), "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, name, str(budget)], cwd=ROOT,
                                env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=240)
        assert worker.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))

    import optuna

    study = optuna.load_study(study_name=name, storage=postgres_url)
    numbers = [t.number for t in study.trials]
    first, second = (set(output["ran"]) for output in outputs)
    # Every trial was run by exactly one worker, and both workers took a share.
    assert first.isdisjoint(second)
    assert first | second == set(numbers)
    assert first and second
    # The budget counts the finished trials of both workers; each may finish one trial past it.
    assert budget <= len(numbers) <= budget + 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Each worker's last look at the study found the other's trials, and no two trials drew the same rate.
    worker_names = {t.user_attrs["worker"] for t in study.trials}
    assert len(worker_names) == 2
    assert all(set(output["workers_seen"]) == worker_names for output in outputs)
    assert len({t.params["learning_rate"] for t in study.trials}) == len(numbers)


def test_search_command_runs_against_postgres(postgres_url, tiny_competition, tmp_path):
    command = [sys.executable, "-m", "pipelines.search_lr", "--data-dir", str(tiny_competition),
               "--work-dir", str(tmp_path / "work"), "--config", str(ROOT / "configs" / "default.yaml"),
               "--storage", postgres_url, "--study-name", f"cli-{secrets.token_hex(4)}", "--n-trials", "2",
               "--set", "train.mode=head", "--set", "backbones.0.weights=none",
               "--set", "backbones.0.input_size=[32, 32]",
               "--set", "folds.n_splits=2", "--set", "train.head.max_epochs=20", "--set", "train.head.patience=3"]
    finished = subprocess.run(command, cwd=ROOT, env=subprocess_environment(),
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]

    import optuna

    (name,) = [n for n in optuna.get_all_study_names(postgres_url) if n.startswith(command[command.index(
        "--study-name") + 1])]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(study.trials) == 2
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # The password reaches neither the output nor MLflow.
    from mlflow.tracking import MlflowClient

    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in finished.stdout + finished.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    assert all(password not in json.dumps([run.data.params, run.data.tags]) for run in runs)
    assert f"{name}: 2 finished trials" in finished.stdout
