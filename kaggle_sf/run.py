"""The main job: competition files to a tracked submission, stage by stage, resuming finished work.

One MLflow parent run per invocation holds the config, ``folds.csv``, the out-of-fold predictions and
the submission; child runs hold each backbone's feature extraction and each backbone x fold model.
Features and fold models are cached under ``<work_dir>/cache`` by content key, so a re-run of the same
config (or a run killed half-way) reuses what was finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_sf import tracking
from kaggle_sf.config import BackboneConfig, Config, flatten
from kaggle_sf.data.catalog import Catalog, load_catalog
from kaggle_sf.data.folds import make_folds
from kaggle_sf.ensemble import fold_average, out_of_fold
from kaggle_sf.metrics import accuracy, log_loss
from kaggle_sf.submission import build_submission, clip_and_normalise, write_submission
from kaggle_sf.train import CLASS_INDEX, FoldResult, class_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished main job produced."""

    run_id: str
    run_name: str
    oof_log_loss: float
    submission_path: Path
    test_log_loss: float | None = None
    """Log loss against ``test_labels.csv`` when the data directory has one (synthetic and dev data)."""


# --- Data ----------------------------------------------------------------------------------------


def prepare_data_dir(data_dir: Path, competition: str) -> bool:
    """Make sure ``data_dir`` holds competition files: download them, or generate a synthetic set.

    Returns:
        True when the data is synthetic.
    """
    data_dir = Path(data_dir)
    if (data_dir / "SYNTHETIC.txt").is_file():
        logger.warning("%s holds the SYNTHETIC State-Farm-format dataset, not the competition's frames", data_dir)
        return True
    if data_dir.is_dir() and any(data_dir.iterdir()):
        return False

    from kaggle_sf.kaggle_client import have_credentials

    if have_credentials():
        from kaggle_sf.data.fetch import download_competition

        logger.info("%s is empty: downloading %s with your Kaggle credentials", data_dir, competition)
        download_competition(competition, data_dir)
        return False

    from kaggle_sf.data.synthetic import generate_dataset

    logger.warning("%s is empty and no Kaggle credentials were found: generating a SYNTHETIC "
                   "State-Farm-format dataset there. Scores on it say nothing about the competition; "
                   "put the competition files in %s (or set up Kaggle credentials) for a real run",
                   data_dir, data_dir)
    if data_dir.is_dir():
        data_dir.rmdir()  # empty, checked above; the generator renames a finished folder into place
    generate_dataset(data_dir)
    return True


def read_test_labels(data_dir: Path) -> pd.DataFrame | None:
    """Return ``test_labels.csv`` (``img, classname``) when the data directory has one."""
    path = Path(data_dir) / "test_labels.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, encoding="utf-8-sig").loc[:, ["img", "classname"]]


# --- Keys ----------------------------------------------------------------------------------------


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fold_model_dir(work_dir: Path, backbone: BackboneConfig, key: dict[str, object], fold: int) -> Path:
    """Return the cache folder of one backbone x fold model, keyed by everything that determines it."""
    return Path(work_dir) / "cache" / "models" / backbone.label / _digest(key) / f"fold_{fold}"


# --- Stages --------------------------------------------------------------------------------------


def _child_run(parent_id: str, experiment_id: str, name: str, stage: str):
    import mlflow

    return mlflow.start_run(run_name=name, experiment_id=experiment_id, nested=True, parent_run_id=parent_id,
                            tags={"stage": stage})


def train_heads(config: Config, backbone: BackboneConfig, catalog: Catalog, folds: pd.DataFrame,
                work_dir: Path, parent_id: str, experiment_id: str) -> list[FoldResult]:
    """Extract (or reuse) one backbone's features, then train or reuse a head per fold."""
    import mlflow

    from kaggle_sf.features import extract_features
    from kaggle_sf.train import train_head_fold

    cache_dir = Path(work_dir) / "cache" / "features"
    started = time.monotonic()
    with _child_run(parent_id, experiment_id, f"{backbone.label}/features", "features") as run:
        train_features = extract_features(backbone, catalog.train, cache_dir, split="train",
                                          batch_size=config.features.batch_size)
        test_features = extract_features(backbone, catalog.test, cache_dir, split="test",
                                         batch_size=config.features.batch_size)
        tracking.log_params(run.info.run_id, {**flatten(asdict(backbone), "backbone"),
                                              "train_file": train_features.path.name,
                                              "test_file": test_features.path.name})
        mlflow.log_metric("seconds", time.monotonic() - started)

    train_x = train_features.aligned(folds["img"])
    train_y = class_indices(folds["classname"])
    test_x = test_features.aligned(catalog.test["img"])
    key = {"mode": "head", "train_features": train_features.path.name, "test_features": test_features.path.name,
           "head": asdict(config.train.head), "seed": config.seed,
           "folds": _digest(folds.loc[:, ["img", "fold"]].to_numpy().tolist())}

    results = []
    for fold in sorted(int(k) for k in folds.loc[folds["fold"] >= 0, "fold"].unique()):
        folder = fold_model_dir(work_dir, backbone, key, fold)
        with _child_run(parent_id, experiment_id, f"{backbone.label}/fold{fold}", "fold") as run:
            mlflow.set_tags({"backbone": backbone.label, "fold": str(fold), "mode": "head"})
            tracking.log_params(run.info.run_id, flatten(asdict(config.train.head), "head"))
            result = FoldResult.load(folder)
            if result is not None:
                logger.info("Reusing finished %s fold %d model from %s", backbone.label, fold, folder)
                mlflow.set_tag("reused", "true")
            else:
                is_validation = (folds["fold"] == fold).to_numpy()
                result = train_head_fold(
                    fold, train_x[~is_validation], train_y[~is_validation], train_x[is_validation],
                    train_y[is_validation], folds.loc[is_validation, "img"].tolist(), test_x,
                    catalog.test["img"].tolist(), config.train.head, seed=config.seed + int(fold))
                result.save(folder)
            mlflow.log_metrics(result.metrics)
            tracking.log_history(run.info.run_id, result.history)
            tracking.log_table(run.info.run_id, result.oof, "predictions/oof.csv")
        results.append(result)
    return results


def score(predictions: pd.DataFrame, labels: pd.DataFrame) -> tuple[float, float]:
    """Return (log loss, accuracy) of ``img, c0..c9`` predictions against ``img, classname`` labels."""
    merged = labels.merge(predictions, on="img", how="inner", validate="one_to_one")
    if len(merged) != len(labels):
        raise ValueError(f"{len(labels) - len(merged)} labelled images have no prediction")
    y = merged["classname"].map(CLASS_INDEX).to_numpy()
    probabilities = merged.loc[:, list(CLASS_INDEX)].to_numpy()
    return log_loss(y, probabilities), accuracy(y, probabilities)


# --- The main job --------------------------------------------------------------------------------


def default_run_name(config_path: Path | None) -> str:
    """Return ``<config stem>-<UTC time>``, e.g. ``default-20261204-201500``."""
    stem = Path(config_path).stem if config_path else "default"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def run(config: Config, data_dir: Path, work_dir: Path, config_path: Path | None = None) -> RunResult:
    """Run the main job end to end and return where its results are.

    Raises:
        CatalogError, FoldsError, WeightsError, SubmissionError: bad input, with a message naming the fix.
    """
    import mlflow

    data_dir, work_dir = Path(data_dir), Path(work_dir)
    run_name = config.run_name or default_run_name(config_path)
    synthetic = prepare_data_dir(data_dir, config.competition)
    catalog = load_catalog(data_dir)
    folds = make_folds(catalog.train, config.folds.n_splits, config.folds.seed, config.folds.validation_subjects)

    tracking.configure_tracking(work_dir)
    experiment = tracking.experiment_id(config.competition, work_dir)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment) as parent:
        parent_id = parent.info.run_id
        mlflow.set_tags({"data_dir": str(data_dir.resolve()), "synthetic": str(synthetic).lower(),
                         "config_file": str(config_path or "defaults")})
        tracking.log_params(parent_id, flatten(config.to_dict()))
        mlflow.log_params({"n_train_images": len(catalog.train), "n_test_images": len(catalog.test),
                           "n_subjects": len(catalog.subjects)})
        tracking.log_table(parent_id, folds, "folds.csv")

        # One fold ensemble per backbone, then the average over backbones.
        oof_tables, test_tables = [], []
        for backbone in config.backbones:
            results = train_heads(config, backbone, catalog, folds, work_dir, parent_id, experiment)
            oof = out_of_fold(results, folds)
            backbone_loss = log_loss(class_indices(folds.loc[folds["fold"] >= 0, "classname"]),
                                     oof.iloc[:, 1:].to_numpy())
            mlflow.log_metric(f"oof_log_loss_{backbone.label}", backbone_loss)
            logger.info("%s: out-of-fold log loss %.4f over %d folds", backbone.label, backbone_loss, len(results))
            oof_tables.append(oof)
            test_tables.append(fold_average(results, catalog.test["img"].tolist()))

        oof = oof_tables[0].copy()
        oof.iloc[:, 1:] = np.mean([t.iloc[:, 1:].to_numpy() for t in oof_tables], axis=0)
        oof_loss = log_loss(class_indices(folds.loc[folds["fold"] >= 0, "classname"]), oof.iloc[:, 1:].to_numpy())
        mlflow.log_metric("oof_log_loss", oof_loss)
        tracking.log_table(parent_id, oof, "predictions/oof.csv")

        test_probabilities = np.mean([t.iloc[:, 1:].to_numpy() for t in test_tables], axis=0)
        test_probabilities = clip_and_normalise(test_probabilities, config.ensemble.clip)
        submission = build_submission(catalog.test["img"].tolist(), test_probabilities, catalog.test["img"].tolist())
        csv_path, gz_path = write_submission(submission, work_dir / "submissions" / f"{run_name}.csv",
                                             catalog.test["img"].tolist())
        mlflow.log_artifact(str(csv_path), artifact_path="submission")

        test_loss = None
        labels = read_test_labels(data_dir)
        if labels is not None:
            test_loss, test_accuracy = score(submission, labels)
            mlflow.log_metrics({"test_log_loss": test_loss, "test_accuracy": test_accuracy})
            logger.info("Against test_labels.csv: log loss %.4f, accuracy %.3f", test_loss, test_accuracy)

    return RunResult(run_id=parent_id, run_name=run_name, oof_log_loss=oof_loss, submission_path=csv_path,
                     test_log_loss=test_loss)
