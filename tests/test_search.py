"""The Optuna search: head trainer, objectives, pruning, studies that resume, MLflow records, wiring."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from kaggle_sf.config import BackboneConfig, ConfigError, FinetuneConfig, HeadConfig, PhaseConfig, load_config
from kaggle_sf.features import Features
from kaggle_sf.metrics import log_loss
from kaggle_sf.search.finetune_objective import (
    TrialFrames,
    finetune_from_rate,
    make_finetune_objective,
    sample_frames,
)
from kaggle_sf.search.head_objective import make_head_objective
from kaggle_sf.search.head_training import fit_head
from kaggle_sf.search.studies import (
    SearchError,
    default_storage_url,
    finished_trials,
    open_storage,
    open_study,
    redacted_url,
    run_study,
)

ROOT = Path(__file__).resolve().parents[1]
GOOD_HEAD = {"learning_rate": 1e-2, "dropout": 0.1, "weight_decay": 1e-5, "batch_size": 32}
STALLED_HEAD = {"learning_rate": 1e-5, "dropout": 0.1, "weight_decay": 1e-5, "batch_size": 32}


def class_clusters(n_per_class: int, n_features: int = 32, spread: float = 1.5, seed: int = 0):
    """Return features drawn around one random centre per class, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, n_features))
    labels = np.repeat(np.arange(10), n_per_class)
    features = centres[labels] + spread * rng.normal(size=(len(labels), n_features))
    return features.astype(np.float32), labels


def search_config(*overrides: str):
    return load_config(None, ["train.head.max_epochs=40", "train.head.patience=4", *overrides])


# --- Head trainer and objective ------------------------------------------------------------------


def test_fit_head_matches_keras_fit_training():
    from kaggle_sf.train import train_head_fold

    features, labels = class_clusters(40, seed=1)
    train_x, train_y, val_x, val_y = features[::2], labels[::2], features[1::2], labels[1::2]
    head = HeadConfig(learning_rate=3e-3, dropout=0.3, weight_decay=1e-4, batch_size=32, max_epochs=80, patience=8)

    fitted = fit_head(train_x, train_y, val_x, val_y, head, seed=3)
    reference = train_head_fold(0, train_x, train_y, val_x, val_y, [str(i) for i in range(len(val_y))], val_x[:2],
                                ["t0", "t1"], head, seed=3)

    loss = log_loss(val_y, fitted.probabilities)
    assert loss < 1.0
    assert abs(loss - reference.metrics["val_log_loss"]) < 0.15
    assert fitted.best_epoch <= fitted.epochs <= head.max_epochs


def test_fit_head_weight_decay_shrinks_kernel():
    train_x, train_y = class_clusters(20, seed=4)
    base = HeadConfig(learning_rate=1e-2, dropout=0.0, batch_size=64, max_epochs=30, patience=30)
    free = fit_head(train_x, train_y, train_x, train_y, replace(base, weight_decay=0.0), seed=0)
    decayed = fit_head(train_x, train_y, train_x, train_y, replace(base, weight_decay=0.1), seed=0)
    assert np.linalg.norm(decayed.weights[0]) < 0.5 * np.linalg.norm(free.weights[0])


def head_study(tmp_path: Path, pruner=None, **search_overrides):
    config = search_config(*[f"search.{key}={value}" for key, value in search_overrides.items()])
    study = open_study(default_storage_url(tmp_path), "heads", config.search, pruner=pruner)
    features, labels = class_clusters(12, seed=5)
    fold_of_row = np.arange(len(labels)) % 3
    objective = make_head_objective(features, labels, fold_of_row, config.train.head, config.search.head, seed=0)
    return study, objective


def test_head_objective_reports_each_fold_and_is_pruned(tmp_path):
    study, objective = head_study(tmp_path, pruner=optuna.pruners.ThresholdPruner(upper=2.0))
    study.enqueue_trial(GOOD_HEAD)
    study.enqueue_trial(STALLED_HEAD)
    run_study(study, objective, n_trials=2, timeout_s=120)

    good, stalled = study.trials
    assert good.state == TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [1, 2, 3]
    assert good.value == pytest.approx(good.intermediate_values[3])
    assert good.value < 1.5
    # At 1e-5 the head barely leaves its random start, above the threshold after the first fold.
    assert stalled.state == TrialState.PRUNED
    assert sorted(stalled.intermediate_values) == [1]
    assert stalled.intermediate_values[1] > 2.0


def test_head_search_beats_a_stalled_head(tmp_path):
    study, objective = head_study(tmp_path, n_startup_trials=3, pruner_startup_trials=2)
    study.enqueue_trial(STALLED_HEAD)
    progress = run_study(study, objective, n_trials=8, timeout_s=300)

    assert progress.n_finished == 8
    assert len(progress.trial_numbers) == 8
    stalled = study.trials[0].value
    assert study.best_value < stalled - 0.5
    assert {t.user_attrs["worker"] for t in study.trials} == {f"{socket.gethostname()}:{os.getpid()}"}


# --- Studies -------------------------------------------------------------------------------------


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    return (x - 3) ** 2


def test_sampler_seeded_by_trial_number(tmp_path):
    config = search_config("search.n_startup_trials=2", "search.seed=7")
    first = open_study(f"sqlite:///{tmp_path / 'a.db'}", "s", config.search)
    run_study(first, quadratic, n_trials=6, timeout_s=60)
    again = open_study(f"sqlite:///{tmp_path / 'b.db'}", "s", config.search)
    run_study(again, quadratic, n_trials=6, timeout_s=60)
    resumed = open_study(f"sqlite:///{tmp_path / 'c.db'}", "s", config.search)
    run_study(resumed, quadratic, n_trials=3, timeout_s=60)
    resumed = open_study(f"sqlite:///{tmp_path / 'c.db'}", "s", config.search)
    run_study(resumed, quadratic, n_trials=6, timeout_s=60)

    draws = [t.params["x"] for t in first.trials]
    assert [t.params["x"] for t in again.trials] == draws
    assert [t.params["x"] for t in resumed.trials] == draws
    assert len(set(draws)) == 6


def test_run_study_counts_trials_of_earlier_runs(tmp_path):
    config = search_config()
    url = default_storage_url(tmp_path)
    run_study(open_study(url, "s", config.search), quadratic, n_trials=3, timeout_s=60)
    progress = run_study(open_study(url, "s", config.search), quadratic, n_trials=5, timeout_s=60)
    assert progress.trial_numbers == (3, 4)
    assert progress.n_finished == 5
    progress = run_study(open_study(url, "s", config.search), quadratic, n_trials=5, timeout_s=60)
    assert progress.trial_numbers == ()


def test_storage_errors_name_the_url_without_password(tmp_path):
    assert redacted_url("postgresql+psycopg2://user:secret@db.example:5432/optuna") == \
        "postgresql+psycopg2://user:***@db.example:5432/optuna"
    with pytest.raises(SearchError, match="invalid"):
        open_storage("not a url")
    with pytest.raises(SearchError, match="invalid"):
        open_storage("mysql+nosuchdriver://user:secret@127.0.0.1/optuna")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        with pytest.raises(SearchError, match=r"mysql\+pymysql://user:\*\*\*@.* is not installed"):
            open_storage("mysql+pymysql://user:secret@127.0.0.1/optuna")


DEAD_WORKER = """
import pathlib, sys, time
from kaggle_sf.config import SearchConfig
from kaggle_sf.search.studies import open_study, run_study

def objective(trial):
    trial.suggest_float("x", -10, 10)
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(600)

run_study(open_study(sys.argv[1], "dead", SearchConfig()), objective, n_trials=1, timeout_s=600)
"""


def test_trial_of_a_dead_worker_runs_again(tmp_path, monkeypatch):
    from kaggle_sf.search import studies

    url = default_storage_url(tmp_path)
    started = tmp_path / "started"
    worker = subprocess.Popen([sys.executable, "-c", DEAD_WORKER, url, str(started)], cwd=ROOT,
                              env=subprocess_environment())
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait(timeout=60)
    assert started.exists(), "the worker never started its trial"

    # A grace period of one second instead of a minute; the dead worker's last heartbeat is older.
    monkeypatch.setattr(studies, "GRACE_PERIOD_S", 1)
    monkeypatch.setattr(studies, "HEARTBEAT_INTERVAL_S", 1)
    time.sleep(2.5)
    study = open_study(url, "dead", search_config().search)
    progress = run_study(study, quadratic, n_trials=1, timeout_s=60)

    dead, retried = study.trials
    assert dead.state == TrialState.FAIL
    assert retried.state == TrialState.COMPLETE
    assert retried.params == dead.params
    assert retried.system_attrs["failed_trial"] == dead.number
    assert progress.trial_numbers == (retried.number,)


@pytest.mark.parametrize("override, key", [
    ("search.head.learning_rate=[0.1, 0.01]", "search.head.learning_rate"),
    ("search.head.weight_decay=[0, 0.1]", "search.head.weight_decay"),
    ("search.head.dropout=[0.2, 1.0]", "search.head.dropout"),
    ("search.head.repeats=0", "search.head.repeats"),
    ("search.pruner=hyperband", "search.pruner"),
    ("search.finetune.steps=2", "search.finetune.steps"),
    ("search.study_name=' '", "search.study_name"),
])
def test_bad_search_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


# --- Fine-tuning search --------------------------------------------------------------------------


def test_finetune_rate_scales_the_backbone_phases():
    finetune = FinetuneConfig(phases=(PhaseConfig(1, 1e-3, train_backbone=False), PhaseConfig(4, 1e-4),
                                      PhaseConfig(2, 1e-5)))
    rates = [phase.learning_rate for phase in finetune_from_rate(finetune, 3e-4).phases]
    assert rates == pytest.approx([1e-3, 3e-4, 3e-5])
    with pytest.raises(ConfigError, match="train_backbone"):
        finetune_from_rate(FinetuneConfig(phases=(PhaseConfig(1, 1e-3, train_backbone=False),)), 1e-4)


def test_sample_frames_spreads_over_drivers_and_classes():
    frames = pd.DataFrame([(f"img_{i}.jpg", f"p{i % 4}", f"c{(i // 4) % 10}") for i in range(400)],
                          columns=["img", "subject", "classname"])
    sample = sample_frames(frames, 80, seed=0)
    assert len(sample) == 80
    assert sample["img"].is_unique
    assert sample.groupby(["subject", "classname"]).size().tolist() == [2] * 40
    assert len(sample_frames(frames, 1000, seed=0)) == 400


def tiny_frames(n_train: int = 24, n_val: int = 12) -> TrialFrames:
    rng = np.random.default_rng(0)
    return TrialFrames(train_images=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                       train_labels=np.arange(n_train) % 10,
                       val_images=rng.integers(0, 256, (n_val, 32, 32, 3), dtype=np.uint8),
                       val_labels=np.arange(n_val) % 10)


def test_keras_pruning_callback_stops_a_finetune_trial(tmp_path):
    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=(32, 32), weights="none")
    config = search_config("search.finetune.steps=4", "search.finetune.evaluations=2",
                           "train.finetune.batch_size=8")
    objective = make_finetune_objective(backbone, config.train.finetune, config.search.finetune, tiny_frames(),
                                        head_weights=None, seed=0)

    complete = open_study(default_storage_url(tmp_path), "complete", config.search, pruner=optuna.pruners.NopPruner())
    run_study(complete, objective, n_trials=1, timeout_s=120)
    stopped = open_study(default_storage_url(tmp_path), "stopped", config.search,
                         pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    run_study(stopped, objective, n_trials=1, timeout_s=120)

    trial = complete.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [0, 1]
    assert trial.value == pytest.approx(min(trial.intermediate_values.values()))
    assert trial.value > 1.0  # random frames: nothing to learn
    # KerasPruningCallback raised TrialPruned from inside Keras 3's fit after the first evaluation.
    assert stopped.trials[0].state == TrialState.PRUNED
    assert sorted(stopped.trials[0].intermediate_values) == [0]


# --- Stage, MLflow and the main job ---------------------------------------------------------------


def test_search_backbone_tracks_trials_and_applies_the_best(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from kaggle_sf import tracking
    from kaggle_sf.search.stage import search_backbone

    features, labels = class_clusters(8, seed=6)
    ids = [f"img_{i}.jpg" for i in range(len(labels))]
    folds = pd.DataFrame({"img": ids, "subject": [f"p{i % 3}" for i in range(len(ids))],
                          "classname": [f"c{k}" for k in labels], "fold": np.arange(len(ids)) % 3})
    train_features = Features(ids=np.array(ids), values=features, path=tmp_path / "train-features.h5")
    config = search_config("search.n_trials=4", "search.n_startup_trials=2")
    backbone = config.backbones[0]

    tracking.configure_tracking(tmp_path)
    experiment = tracking.experiment_id("search-test", tmp_path)
    with mlflow.start_run(experiment_id=experiment) as parent:
        result = search_backbone(config, backbone, None, folds, train_features, tmp_path, parent.info.run_id,
                                 experiment)

    head = result.config.train.head
    assert result.best_params == {name: getattr(head, name) for name in result.best_params}
    assert set(result.best_params) == {"learning_rate", "dropout", "weight_decay", "batch_size"}
    assert head.max_epochs == config.train.head.max_epochs

    client = MlflowClient()
    parent_run = client.get_run(parent.info.run_id)
    assert float(parent_run.data.params[f"search.{backbone.label}.learning_rate"]) == pytest.approx(
        head.learning_rate)
    assert parent_run.data.metrics[f"search_oof_log_loss_{backbone.label}"] == pytest.approx(result.best_value)

    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result.search_run_id}'")
    assert len(trials) == 4
    for run in trials:
        assert set(run.data.params) == {"learning_rate", "dropout", "weight_decay", "batch_size"}
        assert run.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")
        assert run.info.status == ("FINISHED" if run.data.tags["optuna.state"] == "COMPLETE" else "KILLED")
    best_run = [r for r in trials if r.data.tags["optuna.trial_number"] == str(result.best_trial)][0]
    assert best_run.data.metrics["value"] == pytest.approx(result.best_value)

    artifacts = Path(client.download_artifacts(result.search_run_id, "search", str(tmp_path / "download")))
    best = json.loads((artifacts / "best_trial.json").read_text())
    assert best["value"] == pytest.approx(result.best_value)
    assert (artifacts / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(artifacts / "trials.csv")) == 4


def test_main_job_trains_with_the_searched_head(tiny_competition, tmp_path):
    from mlflow.tracking import MlflowClient

    from kaggle_sf.run import run

    config = load_config(None, [
        "backbones.0.weights=none", "backbones.0.input_size=[32, 32]", "folds.n_splits=2",
        "train.head.max_epochs=20", "train.head.patience=3", "ensemble.smoothing=false",
        "search.enabled=true", "search.n_trials=3", "search.n_startup_trials=2", "search.timeout_s=120"])
    result = run(config, tiny_competition, tmp_path / "work")

    client = MlflowClient()
    params = client.get_run(result.run_id).data.params
    label = config.backbones[0].label
    experiment = client.get_run(result.run_id).info.experiment_id
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{result.run_id}' and tags.stage = 'fold'")
    assert len(folds) == 2
    for fold_run in folds:
        assert fold_run.data.params["head.learning_rate"] == params[f"search.{label}.learning_rate"]
        assert fold_run.data.params["head.batch_size"] == params[f"search.{label}.batch_size"]
    assert (tmp_path / "work" / "mlruns" / "optuna.db").is_file()


# --- A killed search resumes ---------------------------------------------------------------------


def subprocess_environment() -> dict[str, str]:
    """Return the environment of a search subprocess: quiet TensorFlow, and no MLFLOW_TRACKING_URI.

    ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI (MLflow 3.17), so an earlier test in this
    process would otherwise send the subprocess's runs to that test's store.
    """
    environment = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return environment


def search_command(data_dir: Path, work_dir: Path, n_trials: int) -> list[str]:
    return [sys.executable, "-m", "pipelines.search_lr", "--data-dir", str(data_dir), "--work-dir", str(work_dir),
            "--config", str(ROOT / "configs" / "default.yaml"), "--study-name", "killed",
            "--n-trials", str(n_trials), "--timeout", "300",
            "--set", "train.mode=head", "--set", "backbones.0.weights=none",
            "--set", "backbones.0.input_size=[32, 32]",
            "--set", "folds.n_splits=2", "--set", "train.head.max_epochs=30", "--set", "train.head.patience=3"]


def killed_study(work_dir: Path) -> optuna.Study:
    storage = default_storage_url(work_dir)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_killed_search_resumes_without_losing_trials(tiny_competition, tmp_path):
    work_dir = tmp_path / "work"
    log = tmp_path / "search.log"
    environment = subprocess_environment()
    with log.open("w") as output:
        search = subprocess.Popen(search_command(tiny_competition, work_dir, n_trials=100), cwd=ROOT,
                                  env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        # Optuna logs a line per finished trial; reading the log leaves the storage to the search alone.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and search.poll() is None:
            if len(re.findall(r"Trial \d+ (finished|pruned)", log.read_text())) >= 2:
                break
            time.sleep(0.2)
    finally:
        search.kill()
        search.wait(timeout=60)
    assert len(finished_trials(killed_study(work_dir))) >= 2, log.read_text()[-3000:]

    # Trials that finished after the last look also count; the budget is three more than before the kill.
    before = {t.number: (t.state, t.value, t.params) for t in finished_trials(killed_study(work_dir))}
    budget = len(before) + 3
    resumed = subprocess.run(search_command(tiny_competition, work_dir, n_trials=budget), cwd=ROOT,
                             env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    study = killed_study(work_dir)
    after = {t.number: (t.state, t.value, t.params) for t in finished_trials(study)}
    assert len(after) == budget
    assert {number: after[number] for number in before} == before
    new_numbers = sorted(set(after) - set(before))
    assert len(new_numbers) == 3
    assert min(new_numbers) > max(before)
    # The trial the kill interrupted stays RUNNING until its heartbeat is stale; it never counts as finished.
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in study.trials)
    assert f"{budget} finished trials" in resumed.stdout
