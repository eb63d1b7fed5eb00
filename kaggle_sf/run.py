"""The main job: competition files to a tracked submission, stage by stage, resuming finished work.

One MLflow parent run per invocation holds the config, ``folds.csv``, the out-of-fold predictions and
the submission; child runs hold each backbone's feature extraction and each backbone x fold model.
Features and fold models are cached under ``<work_dir>/cache`` by content key, so a re-run of the same
config (or a run killed half-way) reuses what was finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_sf import tracking
from kaggle_sf.atomic import remove_stale_temporaries
from kaggle_sf.config import CLASSES, BackboneConfig, Config, FinetuneConfig, flatten
from kaggle_sf.crash import crash_point
from kaggle_sf.data.catalog import Catalog, load_catalog
from kaggle_sf.data.folds import make_folds
from kaggle_sf.data.image_check import screen_catalog
from kaggle_sf.ensemble import make_blend_inputs
from kaggle_sf.features import DECODER_VERSION, Features, extract_features, image_list_digest
from kaggle_sf.lock import exclusive, process_is_alive, work_dir_lock
from kaggle_sf.metrics import accuracy, log_loss
from kaggle_sf.models.backbones import weights_fingerprint
from kaggle_sf.selection import BlendResult, FeatureSpace, choose_blend, feature_space, summarise
from kaggle_sf.submission import build_submission, write_submission
from kaggle_sf.train import CLASS_INDEX, HEAD_TRAINER_VERSION, FoldResult, TrainingError, class_indices

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
    ensemble_chosen: str = ""
    """Name of the blend candidate behind the submission, e.g. ``blend_arithmetic+smoothing+calibration``."""
    held_out_log_loss: float | None = None
    """The chosen candidate's loss when fitted on half of the drivers and scored on the other half."""


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
    # Hidden entries (.gitkeep, an interrupted download's .kaggle-download/) do not count as data.
    if data_dir.is_dir() and any(not p.name.startswith(".") for p in data_dir.iterdir()):
        return False

    from kaggle_sf.kaggle_client import have_credentials

    if have_credentials():
        from kaggle_sf.data.fetch import download_competition

        logger.info("%s is empty: downloading %s with your Kaggle credentials", data_dir, competition)
        download_competition(competition, data_dir, show_progress=True)
        return False

    from kaggle_sf.data.synthetic import generate_dataset

    logger.warning("%s is empty and no Kaggle credentials were found: generating a SYNTHETIC "
                   "State-Farm-format dataset there. Scores on it say nothing about the competition; "
                   "put the competition files in %s (or set up Kaggle credentials) for a real run",
                   data_dir, data_dir)
    generate_dataset(data_dir)
    return True


def class_prior_predictions(train: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """Return ``img, c0..c9`` rows that all hold the training class frequencies, add-one smoothed.

    These are the submission's rows for test images that cannot be decoded, because Kaggle scores every
    test id. When the test classes are distributed like the training classes, the class prior is the
    constant prediction with the lowest expected log loss.
    """
    counts = train["classname"].value_counts().reindex(list(CLASSES), fill_value=0).to_numpy(dtype=np.float64)
    prior = (counts + 1) / (counts.sum() + len(CLASSES))
    table = pd.DataFrame(np.tile(prior, (len(ids), 1)), columns=list(CLASSES))
    table.insert(0, "img", list(ids))
    return table


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


def _job_tags() -> dict[str, str]:
    """Return the tags that name the process of a run, so that the runs of a killed job can be ended."""
    return {"kaggle_sf.pid": str(os.getpid()), "kaggle_sf.host": socket.gethostname()}


def end_runs_of_killed_jobs(experiment_id: str) -> int:
    """Mark as KILLED the RUNNING runs of jobs on this host whose process no longer runs.

    A job killed with SIGKILL cannot end its MLflow runs, which would otherwise show as running forever.

    Returns:
        The number of runs marked.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    marked = 0
    for stale in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                    max_results=1000):
        pid, host = stale.data.tags.get("kaggle_sf.pid"), stale.data.tags.get("kaggle_sf.host")
        if host == socket.gethostname() and pid is not None and not process_is_alive(int(pid)):
            client.set_terminated(stale.info.run_id, status="KILLED")
            marked += 1
    if marked:
        logger.info("Marked %d MLflow runs of killed jobs as KILLED", marked)
    return marked


def _child_run(parent_id: str, experiment_id: str, name: str, stage: str):
    import mlflow

    return mlflow.start_run(run_name=name, experiment_id=experiment_id, nested=True, parent_run_id=parent_id,
                            tags={"stage": stage, **_job_tags()})


def extract_backbone_features(config: Config, backbone: BackboneConfig, catalog: Catalog, work_dir: Path,
                              parent_id: str, experiment_id: str) -> tuple[Features, Features]:
    """Extract (or reuse) one backbone's bottleneck features of the train and test frames."""
    import mlflow

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
    return train_features, test_features


def _finetune_settings(finetune: FinetuneConfig) -> dict[str, object]:
    """Return the fine-tuning settings that change its models; the frame memory only changes its speed."""
    settings = asdict(finetune)
    del settings["frame_cache_gb"]
    return settings


def fold_models_key(config: Config, backbone: BackboneConfig, catalog: Catalog, folds: pd.DataFrame,
                    train_features: Features, test_features: Features) -> dict[str, object]:
    """Return everything that determines the fold models of one backbone under the configured mode."""
    from kaggle_sf.finetune import FINETUNE_TRAINER_VERSION

    key: dict[str, object] = {"mode": config.train.mode, "seed": config.seed,
                              "folds": _digest(folds.loc[:, ["img", "fold"]].to_numpy().tolist())}
    if config.train.mode == "head":
        key.update(train_features=train_features.path.name, test_features=test_features.path.name,
                   head=asdict(config.train.head), trainer=HEAD_TRAINER_VERSION)
    else:
        key.update(backbone=asdict(backbone), weights=weights_fingerprint(backbone),
                   finetune=_finetune_settings(config.train.finetune), trainer=FINETUNE_TRAINER_VERSION,
                   decoder=DECODER_VERSION,
                   train_images=image_list_digest(catalog.train), test_images=image_list_digest(catalog.test))
    return key


def log_augmentation_grid(config: Config, backbone: BackboneConfig, frames: pd.DataFrame) -> None:
    """Log ``augmentation/<label>.png`` on the active run: sample frames above their augmented versions.

    Two frames of each of four classes, so that the same-class half merge has partners to show.
    """
    import mlflow

    from kaggle_sf.data.augment import AugmentConfig, augmentation_grid

    sample = (frames[frames["classname"].isin(list(CLASSES)[:4])].groupby("classname").head(2)
              .sort_values("classname"))
    grid = augmentation_grid(sample["path"].tolist(), class_indices(sample["classname"]).tolist(),
                             backbone.input_size,
                             AugmentConfig(half_merge_probability=config.train.finetune.half_merge_probability),
                             seed=config.seed)
    mlflow.log_image(grid, f"augmentation/{backbone.label}.png")


def train_folds(config: Config, backbone: BackboneConfig, catalog: Catalog, folds: pd.DataFrame,
                features: tuple[Features, Features], work_dir: Path, parent_id: str,
                experiment_id: str) -> list[FoldResult]:
    """Train, or reuse when finished, one model per fold: a head on cached features or a fine-tuned network."""
    import mlflow

    from kaggle_sf.finetune import finetune_fold, keep_frames_in_memory
    from kaggle_sf.train import train_head_fold

    train_features, test_features = features
    mode = config.train.mode
    settings = flatten(asdict(config.train.head if mode == "head" else config.train.finetune), mode)
    key = fold_models_key(config, backbone, catalog, folds, train_features, test_features)
    train_x = train_features.aligned(folds["img"])
    train_y = class_indices(folds["classname"])
    test_x = test_features.aligned(catalog.test["img"])
    frames = catalog.train.set_index("img").loc[folds["img"]].reset_index()
    if mode == "finetune" and config.train.finetune.augment:
        log_augmentation_grid(config, backbone, frames)
    # Decoded on the first fold that trains, so a job that reuses every fold model decodes nothing.
    decoded_frames = functools.cache(functools.partial(keep_frames_in_memory, frames, backbone, config.train.finetune))

    results = []
    for fold in sorted(int(k) for k in folds.loc[folds["fold"] >= 0, "fold"].unique()):
        folder = fold_model_dir(work_dir, backbone, key, fold)
        with _child_run(parent_id, experiment_id, f"{backbone.label}/fold{fold}", "fold") as run:
            mlflow.set_tags({"backbone": backbone.label, "fold": str(fold), "mode": mode,
                             "model_dir": str(folder.resolve())})
            tracking.log_params(run.info.run_id, settings)
            # The lock makes a concurrent job with the same key wait for this fold model, then reuse it.
            with exclusive(folder.with_name(folder.name + ".lock"), f"training {backbone.label} fold {fold}"):
                result = _load_fold_result(folder)
                is_validation = (folds["fold"] == fold).to_numpy()
                if result is not None:
                    logger.info("Reusing finished %s fold %d model from %s", backbone.label, fold, folder)
                    mlflow.set_tag("reused", "true")
                elif mode == "head":
                    remove_stale_temporaries(folder)
                    result = train_head_fold(
                        fold, train_x[~is_validation], train_y[~is_validation], train_x[is_validation],
                        train_y[is_validation], folds.loc[is_validation, "img"].tolist(), test_x,
                        catalog.test["img"].tolist(), config.train.head, seed=config.seed + fold)
                    _check_finite(result, backbone, mode, folder)
                    result.save(folder)
                else:
                    remove_stale_temporaries(folder)
                    result = finetune_fold(backbone, fold, frames[~is_validation], frames[is_validation],
                                           catalog.test, config.train.finetune, seed=config.seed + fold,
                                           folder=folder, decoded=decoded_frames())
                    _check_finite(result, backbone, mode, folder)
                    result.save(folder)
            crash_point(f"fold {fold} saved")
            mlflow.log_metrics(result.metrics)
            tracking.log_history(run.info.run_id, result.history)
            tracking.log_table(run.info.run_id, result.oof, "predictions/oof.csv")
        results.append(result)
    return results


def _check_finite(result: FoldResult, backbone: BackboneConfig, mode: str, folder: Path) -> None:
    """Raise TrainingError when a fold model's predictions are not all finite, deleting its checkpoints.

    Call it while holding the fold's lock.
    """
    numbers = [table.loc[:, list(CLASS_INDEX)].to_numpy(dtype=np.float64) for table in (result.oof, result.test)]
    if all(np.isfinite(values).all() for values in numbers):
        return
    shutil.rmtree(folder, ignore_errors=True)
    rates = "train.head.learning_rate" if mode == "head" else "the learning rates of train.finetune.phases"
    raise TrainingError(f"training {backbone.label} fold {result.fold} diverged: its predictions are not finite "
                        f"(validation log loss {result.metrics.get('val_log_loss', math.nan):.4g}); lower {rates} "
                        "and run again")


def _load_fold_result(folder: Path) -> FoldResult | None:
    """Return the finished fold model in ``folder``, or None when there is none or it cannot be read."""
    try:
        return FoldResult.load(folder)
    except (OSError, ValueError, KeyError) as error:
        logger.warning("The fold model in %s cannot be read (%s); training it again", folder, error)
        return None


def blend_fold_models(config: Config, results_by_backbone: dict[str, list[FoldResult]],
                      spaces: dict[str, FeatureSpace], folds: pd.DataFrame, test_ids: list[str], parent_id: str,
                      test_labels: pd.DataFrame | None) -> BlendResult:
    """Run the blend stage on every backbone's fold models and log its table to the parent run.

    Logs ``ensemble/candidates.csv``, ``ensemble/selection.csv``, the chosen candidate's OOF predictions
    as ``predictions/oof.csv``, its name as tag and param ``ensemble.chosen``, and its ``oof_log_loss``
    and ``held_out_log_loss``. The ``selection_*`` metrics show what choosing by in-sample loss costs:
    the in-sample winner on half of the drivers, scored there and on the other half.
    """
    import mlflow

    inputs = make_blend_inputs(results_by_backbone, folds, test_ids)
    result = choose_blend(inputs, folds, config.ensemble, config.seed, spaces, test_labels)

    candidates = result.candidates.set_index("candidate")
    for label in results_by_backbone:
        mlflow.log_metric(f"oof_log_loss_{label}", float(candidates.loc[f"backbone/{label}", "oof_log_loss"]))
    mlflow.log_metrics({"oof_log_loss": float(result.chosen_row["oof_log_loss"]),
                        "held_out_log_loss": float(result.chosen_row["held_out_log_loss"]),
                        "selection_in_sample_log_loss": float(result.selection["winner_in_sample_log_loss"].mean()),
                        "selection_held_out_log_loss": float(result.selection["winner_held_out_log_loss"].mean())})
    mlflow.set_tag("ensemble.chosen", result.chosen)
    mlflow.log_param("ensemble.chosen", result.chosen)
    tracking.log_table(parent_id, result.candidates, "ensemble/candidates.csv")
    tracking.log_table(parent_id, result.selection, "ensemble/selection.csv")
    tracking.log_table(parent_id, result.oof, "predictions/oof.csv")

    for line in summarise(result):
        logger.info("%s", line)
    logger.info("Chosen blend %s: OOF log loss %.4f, held-out %.4f (%s)", result.chosen,
                result.chosen_row["oof_log_loss"], result.chosen_row["held_out_log_loss"],
                result.chosen_row["description"])
    return result


def score(predictions: pd.DataFrame, labels: pd.DataFrame) -> tuple[float, float]:
    """Return (log loss, accuracy) of ``img, c0..c9`` predictions against ``img, classname`` labels."""
    merged = labels.merge(predictions, on="img", how="inner", validate="one_to_one")
    if merged.empty:
        raise ValueError("no labelled test image has a prediction; check that test_labels.csv lists the test images")
    if len(merged) != len(labels):
        # Test images left out of sample_submission.csv have labels but no prediction.
        logger.warning("%d of %d labelled test images have no prediction (not in sample_submission.csv); scoring "
                       "the other %d", len(labels) - len(merged), len(labels), len(merged))
    y = merged["classname"].map(CLASS_INDEX).to_numpy()
    probabilities = merged.loc[:, list(CLASS_INDEX)].to_numpy()
    return log_loss(y, probabilities), accuracy(y, probabilities)


def submit_run(config: Config, data_dir: Path, work_dir: Path, run_id: str) -> None:
    """Upload a finished run's submission to Kaggle and record the score on the run.

    Runs after the parent run has closed, so the submission artifact is final.
    """
    from kaggle_sf.kaggle_client import KaggleClient
    from kaggle_sf.kaggle_submit import plan_submission, upload_and_wait

    plan = plan_submission(config.competition, data_dir, work_dir, run_id=run_id,
                           message=config.submit.message or None)
    submission = upload_and_wait(plan, KaggleClient(), timeout=config.submit.timeout_s,
                                 poll_interval=config.submit.poll_interval_s)
    logger.info("Kaggle submission %d is %s (public score %s)", submission.ref, submission.status,
                submission.public_score)


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
    # Two jobs on one work directory must not download, generate or extract into the same folder at once.
    with exclusive(work_dir_lock(work_dir, f"data-{_digest(str(data_dir.resolve()))}"), f"preparing {data_dir}"):
        synthetic = prepare_data_dir(data_dir, config.competition)
        catalog = load_catalog(data_dir)
    screened = screen_catalog(catalog, config.data.on_bad_image, work_dir / "cache" / "image_checks")
    catalog = screened.catalog
    folds = make_folds(catalog.train, config.folds.n_splits, config.folds.seed, config.folds.validation_subjects)

    tracking.configure_tracking(work_dir)
    # MLflow 3.17 creates the tables of a new SQLite store without a lock, so two jobs starting on a new
    # work directory at once would both run its migrations and one would fail.
    with exclusive(work_dir_lock(work_dir, "mlflow-store"), "creating the MLflow store"):
        experiment = tracking.experiment_id(config.competition, work_dir)
    end_runs_of_killed_jobs(experiment)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment, tags=_job_tags()) as parent:
        parent_id = parent.info.run_id
        mlflow.set_tags({"data_dir": str(data_dir.resolve()), "synthetic": str(synthetic).lower(),
                         "config_file": str(config_path or "defaults")})
        tracking.log_params(parent_id, flatten(config.to_dict()))
        mlflow.log_params({"n_train_images": len(catalog.train), "n_test_images": len(catalog.test),
                           "n_subjects": len(catalog.subjects)})
        tracking.log_table(parent_id, folds, "folds.csv")
        mlflow.log_param("n_bad_images", len(screened.bad_images))
        if len(screened.bad_images):
            tracking.log_table(parent_id, screened.bad_images, "bad_images.csv")

        # One fold ensemble per backbone; the blend stage then scores every way of combining them.
        validated = folds[folds["fold"] >= 0]
        results_by_backbone: dict[str, list[FoldResult]] = {}
        spaces: dict[str, FeatureSpace] = {}
        for backbone in config.backbones:
            features = extract_backbone_features(config, backbone, catalog, work_dir, parent_id, experiment)
            backbone_config = config
            if config.search.enabled:
                # The study's best head settings (or fine-tuning rates) replace the configured ones.
                from kaggle_sf.search.stage import search_backbone

                backbone_config = search_backbone(config, backbone, catalog, folds, features[0], work_dir,
                                                  parent_id, experiment).config
            results = train_folds(backbone_config, backbone, catalog, folds, features, work_dir, parent_id,
                                  experiment)
            results_by_backbone[backbone.label] = results
            if config.ensemble.smoothing:
                train_features, test_features = features
                spaces[backbone.label] = feature_space(
                    train_features.aligned(validated["img"]), validated["fold"].to_numpy(),
                    test_features.aligned(catalog.test["img"]), max(config.ensemble.neighbours))

        labels = read_test_labels(data_dir)
        blended = blend_fold_models(config, results_by_backbone, spaces, folds, catalog.test["img"].tolist(),
                                    parent_id, labels)
        oof_loss = float(blended.chosen_row["oof_log_loss"])
        crash_point("blend")
        # Test images left out as undecodable get the class prior, so that every test id has a row.
        predicted = pd.concat([blended.test, class_prior_predictions(catalog.train, screened.skipped_test_ids)],
                              ignore_index=True)
        submission = build_submission(predicted["img"].tolist(), predicted.loc[:, list(CLASSES)].to_numpy(),
                                      screened.test_ids)
        submission_path = work_dir / "submissions" / f"{run_name}.csv"
        with exclusive(work_dir_lock(work_dir, f"submission-{run_name}"), f"writing {submission_path}"):
            for name in (submission_path.name, submission_path.name + ".gz"):
                remove_stale_temporaries(submission_path.parent, name)
            csv_path, gz_path = write_submission(submission, submission_path, screened.test_ids)
        mlflow.log_artifact(str(csv_path), artifact_path="submission")

        test_loss = None
        if labels is not None:
            test_loss, test_accuracy = score(submission, labels)
            mlflow.log_metrics({"test_log_loss": test_loss, "test_accuracy": test_accuracy})
            logger.info("Against test_labels.csv: log loss %.4f, accuracy %.3f", test_loss, test_accuracy)

        if config.explain.enabled:
            from kaggle_sf.explain.report import log_run_explanations

            log_run_explanations(parent_id, catalog, folds, blended.oof, config.explain)

    if config.submit.enabled:
        submit_run(config, data_dir, work_dir, parent_id)

    return RunResult(run_id=parent_id, run_name=run_name, oof_log_loss=oof_loss, submission_path=csv_path,
                     test_log_loss=test_loss, ensemble_chosen=blended.chosen,
                     held_out_log_loss=float(blended.chosen_row["held_out_log_loss"]))
