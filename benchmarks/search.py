"""Search: trials per minute of the head search on cached features, and its head trainer against Keras ``fit``.

Two measurements on MobileNet (width 0.25) 224x224 features of the training frames, extracted once
into ``<work_dir>/cache/features`` (a cache hit when an earlier benchmark left them there):

- ``trials_per_minute``: ``kaggle_sf.search.stage.search_backbone`` in head mode, as the main job
  calls it with ``search.enabled``: TPE sampling, median pruning, an SQLite study storage and an MLflow
  child run per trial, each trial training one head per driver fold with early stopping;
- ``head_trainer``: one trial's work, a head per fold at the default head settings, trained by the
  search's ``fit_head`` (an epoch per TensorFlow graph call) and by ``train_head_fold`` (Keras
  ``fit``), interleaved. Early stopping is off, so both run the same number of epochs.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import Result, interleave, load_average, rate_result

logger = logging.getLogger(__name__)

SIZE = (224, 224)


def _cached_features(data_dir: Path, work_dir: Path):
    from kaggle_sf.config import BackboneConfig
    from kaggle_sf.data.catalog import load_catalog
    from kaggle_sf.data.folds import make_folds
    from kaggle_sf.features import extract_features

    catalog = load_catalog(Path(data_dir))
    folds = make_folds(catalog.train, 5, 42)
    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=SIZE, weights="imagenet")
    features = extract_features(backbone, catalog.train, Path(work_dir) / "cache" / "features", split="train")
    return catalog, folds, backbone, features


def _search_rate(config, catalog, folds, backbone, features, work_dir: Path) -> Result:
    import mlflow

    from kaggle_sf import tracking
    from kaggle_sf.search.stage import search_backbone

    search_dir = Path(work_dir) / "search"
    shutil.rmtree(search_dir, ignore_errors=True)
    tracking.configure_tracking(search_dir)
    experiment = tracking.experiment_id("benchmark-search", search_dir)
    with mlflow.start_run(run_name="benchmark-search", experiment_id=experiment) as parent:
        result = search_backbone(config, backbone, catalog, folds, features, search_dir, parent.info.run_id,
                                 experiment)
    progress = result.progress
    settings = {"backbone": backbone.label, "n_trials": config.search.n_trials, "pruner": config.search.pruner,
                "trials_finished": progress.n_finished, "max_epochs": config.train.head.max_epochs,
                "patience": config.train.head.patience, "storage": "sqlite", "load_average_1min": load_average()}
    return Result(name="search/trials_per_minute", value=progress.trials_per_minute, unit="trials/min", ratio=None,
                  frames=len(features.ids), seconds=progress.seconds, settings=settings)


def run_search(data_dir: Path, work_dir: Path, n_trials: int, epochs: int, rounds: int) -> list[Result]:
    """Measure the head search; see the module docstring.

    Args:
        data_dir: competition files.
        work_dir: contains the features cache, the study storage and the MLflow store.
        n_trials: finished trials the search runs.
        epochs: epochs per fold head in the trainer comparison.
        rounds: rounds of the trainer comparison.
    """
    from kaggle_sf.config import Config, SearchConfig
    from kaggle_sf.search.head_objective import fit_head
    from kaggle_sf.train import class_indices, train_head_fold

    catalog, folds, backbone, features = _cached_features(data_dir, work_dir)
    config = Config(backbones=(backbone,))
    config = replace(config, search=SearchConfig(enabled=True, n_trials=n_trials, timeout_s=3600))
    logger.info("Search: %d trials of the head search on %d cached feature rows", n_trials, len(features.ids))
    results = [_search_rate(config, catalog, folds, backbone, features, work_dir)]

    train_x, train_y = features.aligned(folds["img"]), class_indices(folds["classname"])
    fold_of_row = folds["fold"].to_numpy()
    ids = folds["img"].to_numpy()
    head = replace(config.train.head, max_epochs=epochs, patience=epochs + 1)

    def trainer(use_keras_fit: bool):
        def train_all_folds(round_number: int) -> int:
            n_epochs = 0
            for fold in range(5):
                validation = fold_of_row == fold
                split = (train_x[~validation], train_y[~validation], train_x[validation], train_y[validation])
                if use_keras_fit:
                    fitted = train_head_fold(fold, *split, ids[validation].tolist(), train_x[:0], [], head, seed=fold)
                    n_epochs += int(fitted.metrics["epochs"])
                else:
                    n_epochs += fit_head(*split, head, seed=fold).epochs
            return n_epochs
        return train_all_folds

    logger.info("Search: head trainers, %d rounds of 5 folds x %d epochs", rounds, epochs)
    started = time.perf_counter()
    timings = interleave({"fit_head": trainer(False), "keras_fit": trainer(True)}, rounds)
    settings = {"epochs_per_fold": epochs, "folds": 5, "batch_size": head.batch_size, "rows": len(train_y),
                "wall_seconds": round(time.perf_counter() - started, 1)}
    trainer_rows = [rate_result("search/head_trainer_graph_epochs", timings, "fit_head", "keras_fit", settings,
                                "epochs/s"),
                    rate_result("search/head_trainer_keras_fit", timings, "keras_fit", None, settings, "epochs/s")]
    # The rounds count epochs, not frames; every epoch passes over the fold's training rows.
    return results + [replace(row, frames=None) for row in trainer_rows]
