"""The search stage: one study per backbone, tracked in MLflow, whose best values the training then uses.

``search_backbone`` runs inside the main job's parent run, or the standalone search job's, as a child
"search run". Each trial is a child run of the search run. The best values are applied to a copy of the
run configuration, logged on the parent run as ``search.<backbone>.<param>`` and returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd

from kaggle_sf import tracking
from kaggle_sf.config import BackboneConfig, Config, flatten
from kaggle_sf.data.catalog import Catalog
from kaggle_sf.lock import exclusive, work_dir_lock
from kaggle_sf.search import finetune_objective, head_objective
from kaggle_sf.search.studies import StudyProgress, default_storage_url, open_study, redacted_url, run_study
from kaggle_sf.search.trial_runs import TrialRunLogger, log_study_summary, process_tags
from kaggle_sf.train import class_indices

if TYPE_CHECKING:
    from kaggle_sf.features import Features

logger = logging.getLogger(__name__)

OBJECTIVE_VERSION = 4
"""Part of every study's key: changes whenever a trial's training or scoring changes, so new trials never
join a study whose values were measured differently."""


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one backbone's search and the configuration that uses it."""

    kind: str
    """``head`` or ``finetune``."""
    study_name: str
    objective: str
    """``oof_log_loss`` (head) or ``val_log_loss`` (fine-tuning)."""
    config: Config
    """The run configuration with the best values applied (unchanged when no trial completed)."""
    search_run_id: str
    progress: StudyProgress
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def study_name(config: Config, backbone: BackboneConfig, kind: str, key: dict[str, object]) -> str:
    """Return ``<prefix>-<kind>-<backbone>-<digest of key>``, the same on every machine with the same data."""
    return f"{config.search.study_name}-{kind}-{backbone.label}-{_digest({**key, 'version': OBJECTIVE_VERSION})}"


def _first_fold_frames(catalog: Catalog, folds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = catalog.train.set_index("img").loc[folds["img"]].reset_index()
    first = int(folds.loc[folds["fold"] >= 0, "fold"].min())
    is_validation = (folds["fold"] == first).to_numpy()
    return frames[~is_validation], frames[is_validation]


def _head_search(config: Config, train_features: Features, folds: pd.DataFrame):
    features = train_features.aligned(folds["img"])
    labels = class_indices(folds["classname"])
    base = config.train.head
    key = {"features": train_features.path.name, "folds": folds.loc[:, ["img", "fold"]].to_numpy().tolist(),
           "max_epochs": base.max_epochs, "patience": base.patience, "space": asdict(config.search.head),
           "seed": config.seed}
    objective = head_objective.make_head_objective(features, labels, folds["fold"].to_numpy(), base,
                                                   config.search.head, config.seed)

    def apply(params: dict[str, Any]) -> Config:
        head = head_objective.head_from_params(base, params)
        return replace(config, train=replace(config.train, head=head))

    return key, objective, head_objective.OBJECTIVE, apply


def _finetune_search(config: Config, backbone: BackboneConfig, catalog: Catalog, train_features: Features,
                     folds: pd.DataFrame):
    finetune, search = config.train.finetune, config.search.finetune
    finetune_objective.first_backbone_phase(finetune)
    key = {"features": train_features.path.name, "folds": folds.loc[:, ["img", "fold"]].to_numpy().tolist(),
           "finetune": asdict(finetune), "search": asdict(search), "seed": config.seed}

    prepared: list[Callable[[optuna.Trial], float]] = []

    def prepare() -> Callable[[optuna.Trial], float]:
        train, validation = _first_fold_frames(catalog, folds)
        head_weights = None
        if not finetune.phases[0].train_backbone:
            head_weights = finetune_objective.warm_head_weights(
                train_features.aligned(train["img"]), class_indices(train["classname"]),
                train_features.aligned(validation["img"]), class_indices(validation["classname"]),
                finetune, config.train.head, config.seed)
        frames = finetune_objective.load_trial_frames(train, validation, backbone, search, config.seed)
        return finetune_objective.make_finetune_objective(backbone, finetune, search, frames, head_weights,
                                                          config.seed)

    def objective(trial: optuna.Trial) -> float:
        # Frames are decoded on the first trial, so a study that already contains its trials costs nothing.
        if not prepared:
            prepared.append(prepare())
        return prepared[0](trial)

    def apply(params: dict[str, Any]) -> Config:
        tuned = finetune_objective.finetune_from_rate(finetune, params["learning_rate"])
        return replace(config, train=replace(config.train, finetune=tuned))

    return key, objective, finetune_objective.OBJECTIVE, apply


def search_backbone(config: Config, backbone: BackboneConfig, catalog: Catalog, folds: pd.DataFrame,
                    train_features: Features, work_dir: Path, parent_id: str, experiment_id: str) -> SearchResult:
    """Search one backbone's head settings (``train.mode: head``) or fine-tuning rate (``finetune``).

    The study resumes from its storage when it exists, and trials run until it contains ``search.n_trials``
    finished ones or ``search.timeout_s`` seconds have passed.

    Args:
        config: the run configuration; ``config.search`` sets the budget, storage and sampler.
        backbone: whose study this is.
        catalog, folds: the training frames and their driver folds.
        train_features: the backbone's cached bottleneck features of the training frames.
        work_dir: holds the default study storage ``mlruns/optuna.db``.
        parent_id, experiment_id: the MLflow run the search run is a child of.

    Raises:
        SearchError: the study storage cannot be opened.
        ConfigError: the fine-tuning phases have no phase that trains the backbone.
    """
    import mlflow

    kind = config.train.mode
    if kind == "head":
        key, objective, objective_name, apply = _head_search(config, train_features, folds)
    else:
        key, objective, objective_name, apply = _finetune_search(config, backbone, catalog, train_features, folds)
    name = study_name(config, backbone, kind, key)
    storage_url = config.search.storage or default_storage_url(work_dir)
    # Processes that share a work directory would otherwise race to create the SQLite tables; a shared
    # database server is opened with retries instead (see open_storage).
    with exclusive(work_dir_lock(work_dir, "optuna-store"), "opening the Optuna study storage"):
        study = open_study(storage_url, name, config.search)
    logger.info("Searching %s for %s in study %s (%s): up to %d finished trials or %.0f s", kind, backbone.label,
                name, redacted_url(storage_url), config.search.n_trials, config.search.timeout_s)

    with mlflow.start_run(run_name=f"{backbone.label}/search", experiment_id=experiment_id, nested=True,
                          parent_run_id=parent_id, tags={"stage": "search", **process_tags()}) as run:
        search_run_id = run.info.run_id
        mlflow.set_tags({"backbone": backbone.label, "kind": kind, "optuna.study": name,
                         "optuna.storage": redacted_url(storage_url)})
        tracking.log_params(search_run_id, {**flatten(asdict(config.search), "search"), "objective": objective_name,
                                            "storage": redacted_url(storage_url), "study": name})
        trial_logger = TrialRunLogger(search_run_id, experiment_id, objective_name, backbone.label)
        progress = run_study(study, objective, config.search.n_trials, config.search.timeout_s,
                             callbacks=[trial_logger])
        best = log_study_summary(search_run_id, study, objective_name)
        mlflow.log_metrics({"trials_run": len(progress.trial_numbers), "trials_finished": progress.n_finished,
                            "trials_per_minute": progress.trials_per_minute, "seconds": progress.seconds})
        if best is not None:
            mlflow.log_metric(f"best_{objective_name}", float(best["value"]))

    if best is None:
        logger.warning("No trial of study %s has completed: %s keeps the configured values", name, backbone.label)
        return SearchResult(kind, name, objective_name, config, search_run_id, progress)

    params = dict(best["params"])
    tuned = apply(params)
    tracking.log_params(parent_id, {f"search.{backbone.label}.{k}": v for k, v in params.items()})
    tracking.log_params(parent_id, {f"search.{backbone.label}.study": name})
    mlflow.tracking.MlflowClient().log_metric(parent_id, f"search_{objective_name}_{backbone.label}",
                                              float(best["value"]))
    ran_here = (f"{len(progress.trial_numbers)} run here at {progress.trials_per_minute:.1f} per minute"
                if progress.trial_numbers else "none run here")
    logger.info("%s search for %s: best %s %.4f (trial %d of %d finished; %s): %s", kind, backbone.label,
                objective_name, best["value"], best["number"], progress.n_finished, ran_here,
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
    return SearchResult(kind, name, objective_name, tuned, search_run_id, progress, best_value=float(best["value"]),
                        best_params=params, best_trial=int(best["number"]))
