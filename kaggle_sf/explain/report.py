"""The pictures a main job logs to its MLflow parent run.

Artifacts, all PNG:

* ``charts/frames_per_class.png``, ``charts/frames_per_driver.png``, ``charts/sample_frames.png``: the data.
* ``charts/confusion_matrix.png``, ``charts/log_loss_per_class.png``: the chosen out-of-fold predictions.
* ``charts/learning_curves_<backbone>.png``: per-epoch losses of each fold model.
* ``cam/<backbone>.png``: per true class, frames the fold models got right and wrong, each explained by
  the fold model that did not train on its driver, with the heatmap of the predicted class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from kaggle_sf.config import CLASSES, ExplainConfig
from kaggle_sf.data.catalog import Catalog
from kaggle_sf.explain import charts
from kaggle_sf.explain.fold_models import ExplainError, FoldModelRef, find_fold_models, load_cam_models
from kaggle_sf.explain.frames import FrameError
from kaggle_sf.train import FoldResult, class_indices

logger = logging.getLogger(__name__)

DISPLAY_SIDE = 320
"""Longer side, in pixels, of the frames drawn in grids."""


def _log_figure(run_id: str, figure, artifact_file: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().log_figure(run_id, figure, artifact_file)


# --- Choosing frames for class-activation grids --------------------------------------------------


def _spread_over_drivers(frames: pd.DataFrame, count: int) -> pd.DataFrame:
    """Take ``count`` rows in order, but the first row of each driver before any driver's second."""
    rank = frames.groupby("subject", sort=False).cumcount().to_numpy()
    return frames.iloc[np.argsort(rank, kind="stable")[:count]]


def pick_cam_frames(oof: pd.DataFrame, truth: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """Choose out-of-fold frames to explain: per true class, the most confident right and wrong predictions.

    Args:
        oof: out-of-fold predictions ``img, c0..c9`` (and any other columns, e.g. ``fold``).
        truth: ``img, subject, classname`` of the training frames.
        per_class: right frames per class, and as many wrong ones; fewer when a class has fewer.

    Returns:
        The chosen rows of ``oof`` with ``subject``, ``classname``, ``predicted``, ``probability`` and
        ``correct`` added, right frames before wrong ones within each class.
    """
    table = oof.merge(truth.loc[:, ["img", "subject", "classname"]], on="img", how="inner", validate="one_to_one")
    probabilities = table.loc[:, list(CLASSES)].to_numpy()
    predicted = probabilities.argmax(axis=1)
    table = table.assign(predicted=[CLASSES[i] for i in predicted], probability=probabilities.max(axis=1))
    table["correct"] = table["predicted"] == table["classname"]

    chosen = []
    for classname in CLASSES:
        frames = table[table["classname"] == classname].sort_values(["probability", "img"], ascending=[False, True])
        chosen.append(_spread_over_drivers(frames[frames["correct"]], per_class))
        chosen.append(_spread_over_drivers(frames[~frames["correct"]], per_class))
    return pd.concat(chosen, ignore_index=True)


def cam_tiles(refs: Sequence[FoldModelRef], frames: pd.DataFrame, method: str = "auto") -> dict[str, list]:
    """Explain frames with the fold model that held each one out, and return tiles per true class.

    Args:
        refs: the fold models of one backbone.
        frames: rows of ``pick_cam_frames`` with the ``fold`` that validated each frame and its ``path``.
        method: ``auto``, ``cam`` or ``gradcam``.
    """
    from kaggle_sf.explain.cam import explain_frames, overlay_heatmap
    from kaggle_sf.explain.frames import model_inputs, read_rgb

    models = dict(zip((ref.fold for ref in refs), load_cam_models(refs)))
    tiles: dict[str, list] = {classname: [] for classname in CLASSES}
    overlays: dict[str, np.ndarray] = {}
    for fold, group in frames.groupby("fold", sort=True):
        if fold not in models:
            raise ExplainError(f"no fold model for fold {fold}, which validated {group['img'].iloc[0]}")
        model = models[fold]
        inputs = model_inputs(group["path"].tolist(), model.input_size)
        classes = np.array([CLASSES.index(name) for name in group["predicted"]])
        explanation = explain_frames([model], inputs, classes=classes, method=method)
        for img, path, heatmap in zip(group["img"], group["path"], explanation.heatmaps):
            overlays[img] = overlay_heatmap(read_rgb(path, max_side=DISPLAY_SIDE), heatmap)

    # Tiles keep the order of ``frames``: right before wrong within each class.
    for row in frames.itertuples(index=False):
        tiles[row.classname].append(charts.CamTile(overlay=overlays[row.img], img=row.img,
                                                   true_class=row.classname, predicted_class=row.predicted,
                                                   probability=float(row.probability)))
    return tiles


# --- Logging -------------------------------------------------------------------------------------


def log_data_charts(run_id: str, train: pd.DataFrame, per_class: int) -> None:
    """Log frames per class, frames per driver and a grid of sample frames per class."""
    from kaggle_sf.explain.frames import read_rgb

    _log_figure(run_id, charts.frames_per_class_figure(train), "charts/frames_per_class.png")
    _log_figure(run_id, charts.frames_per_driver_figure(train), "charts/frames_per_driver.png")

    samples = charts.sample_frames(train, per_class)
    rows = []
    for classname in CLASSES:
        chosen = samples[samples["classname"] == classname]
        rows.append([(read_rgb(path, max_side=DISPLAY_SIDE), f"{img} ({subject})", "black")
                     for img, path, subject in zip(chosen["img"], chosen["path"], chosen["subject"])])
    labels = [f"{name} {charts.CLASS_DESCRIPTIONS[name]}" for name in CLASSES]
    _log_figure(run_id, charts.frame_grid_figure(rows, labels, "Sample training frames per class"),
                "charts/sample_frames.png")


def log_result_charts(run_id: str, folds: pd.DataFrame, oof: pd.DataFrame) -> None:
    """Log the out-of-fold confusion matrix and the log loss per class."""
    validated = folds[folds["fold"] >= 0]
    aligned = oof.set_index("img").reindex(validated["img"])
    missing = aligned.index[aligned.isna().any(axis=1)]
    if len(missing):
        raise ValueError(f"the out-of-fold predictions lack {len(missing)} validated frames, e.g. {missing[0]}")
    labels = class_indices(validated["classname"])
    probabilities = aligned.loc[:, list(CLASSES)].to_numpy()
    _log_figure(run_id, charts.confusion_matrix_figure(labels, probabilities), "charts/confusion_matrix.png")
    _log_figure(run_id, charts.per_class_log_loss_figure(labels, probabilities), "charts/log_loss_per_class.png")


def log_backbone_charts(run_id: str, refs: Sequence[FoldModelRef], catalog: Catalog, folds: pd.DataFrame,
                        config: ExplainConfig) -> None:
    """Log one backbone's learning curves and its class-activation grid."""
    label = refs[0].backbone.label
    results = {ref.fold: FoldResult.load(ref.model_dir) for ref in refs}
    missing = [ref.name for ref in refs if results[ref.fold] is None]
    if missing:
        raise ExplainError(f"no finished fold model in the folder of {', '.join(missing)}")
    histories = {fold: result.history for fold, result in results.items()}
    _log_figure(run_id, charts.learning_curves_figure(histories, label), f"charts/learning_curves_{label}.png")

    oof = pd.concat([result.oof.assign(fold=fold) for fold, result in results.items()], ignore_index=True)
    truth = folds.merge(catalog.train.loc[:, ["img", "path"]], on="img", how="left", validate="one_to_one")
    frames = pick_cam_frames(oof, truth.drop(columns="fold"), config.frames_per_class)
    frames = frames.merge(truth.loc[:, ["img", "path"]], on="img", how="left", validate="one_to_one")
    tiles = cam_tiles(refs, frames, config.method)
    title = f"Where {label} looks: out-of-fold frames, heatmap of the predicted class"
    _log_figure(run_id, charts.cam_grid_figure(tiles, 2 * config.frames_per_class, title), f"cam/{label}.png")


def log_run_explanations(run_id: str, catalog: Catalog, folds: pd.DataFrame, oof: pd.DataFrame,
                         config: ExplainConfig) -> None:
    """Log the data and result charts, and per backbone its learning curves and class-activation grid.

    A backbone whose fold models cannot be found or loaded (for example models cached before fold models
    were saved), or a frame that cannot be read for a picture, gets a warning instead of failing the run.
    """
    from kaggle_sf.models.backbones import WeightsError

    started = time.monotonic()
    try:
        log_data_charts(run_id, catalog.train, config.frames_per_class)
    except FrameError as error:
        logger.warning("Charts of the data are incomplete: %s", error)
    log_result_charts(run_id, folds, oof)

    try:
        refs = find_fold_models(run_id)
    except ExplainError as error:
        logger.warning("No learning curves or class-activation grids: %s", error)
        return
    for label in dict.fromkeys(ref.backbone.label for ref in refs):
        try:
            log_backbone_charts(run_id, [ref for ref in refs if ref.backbone.label == label], catalog, folds,
                                config)
        except (ExplainError, FrameError, WeightsError) as error:
            logger.warning("No class-activation grid for %s: %s", label, error)
    logger.info("Logged charts and class-activation grids to run %s in %.1f s", run_id,
                time.monotonic() - started)
