"""Charts of a run: the data (frames per class and driver, sample frames), the out-of-fold results
(confusion matrix, log loss per class), training (learning curves per fold) and class-activation grids.

Each ``*_figure`` function returns a ``matplotlib.figure.Figure`` built without pyplot, so no window or
global figure state is involved and it renders with the Agg backend when saved as PNG
(``figure.savefig`` or ``MlflowClient.log_figure``). The numbers behind a chart come from separate
functions, so they can be checked without reading pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from kaggle_sf.config import CLASSES
from kaggle_sf.explain import CLASS_DESCRIPTIONS
from kaggle_sf.metrics import log_loss

TILE_INCHES = 1.9
"""Width of one frame in grids of frames; heights follow the competition's 4:3 frames."""


def _class_labels() -> list[str]:
    return [f"{name} {CLASS_DESCRIPTIONS[name]}" for name in CLASSES]


# --- The data ------------------------------------------------------------------------------------


def frames_per_class(train: pd.DataFrame) -> pd.Series:
    """Count the training frames of each class, c0..c9 in order (0 for an absent class)."""
    return train["classname"].value_counts().reindex(list(CLASSES), fill_value=0)


def frames_per_class_figure(train: pd.DataFrame) -> Figure:
    """Draw a bar chart of training frames per class."""
    counts = frames_per_class(train)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(_class_labels()[::-1], counts.to_numpy()[::-1], color="tab:blue")
    for position, count in enumerate(counts.to_numpy()[::-1]):
        axes.text(count, position, f" {count}", va="center", fontsize=8)
    axes.set_xlabel("training frames")
    axes.set_title(f"Frames per class ({len(train)} training frames)")
    return figure


def frames_per_driver(train: pd.DataFrame) -> pd.DataFrame:
    """Count the training frames of each driver and class: one row per ``subject``, columns c0..c9."""
    counts = pd.crosstab(train["subject"], train["classname"])
    return counts.reindex(columns=list(CLASSES), fill_value=0).sort_index()


def frames_per_driver_figure(train: pd.DataFrame) -> Figure:
    """Draw a stacked bar chart of training frames per driver, split by class."""
    counts = frames_per_driver(train)
    figure = Figure(figsize=(max(6.0, 0.4 * len(counts) + 2), 4.5), layout="constrained")
    axes = figure.add_subplot()
    bottom = np.zeros(len(counts))
    colours = [f"C{i}" for i in range(len(CLASSES))]
    for classname, colour in zip(CLASSES, colours):
        axes.bar(counts.index, counts[classname], bottom=bottom, label=classname, color=colour)
        bottom += counts[classname].to_numpy()
    axes.set_ylabel("training frames")
    axes.set_title(f"Frames per driver ({len(counts)} drivers)")
    axes.tick_params(axis="x", labelrotation=90)
    axes.legend(ncols=5, fontsize=7, loc="upper right")
    return figure


def sample_frames(train: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Choose up to ``per_class`` frames per class, each of a different driver when there are enough."""
    rng = np.random.default_rng(seed)
    chosen = []
    for classname in CLASSES:
        frames = train[train["classname"] == classname]
        if frames.empty:
            continue
        shuffled = frames.iloc[rng.permutation(len(frames))]
        # The first frame of each driver comes first, so the row shows different drivers.
        order = shuffled.groupby("subject", sort=False).cumcount().to_numpy()
        chosen.append(shuffled.iloc[np.argsort(order, kind="stable")[:per_class]])
    return pd.concat(chosen, ignore_index=True) if chosen else train.iloc[:0]


def frame_grid_figure(rows: Sequence[Sequence[tuple[np.ndarray, str, str] | None]], row_labels: Sequence[str],
                      title: str) -> Figure:
    """Draw frames in a grid with a caption under each; a None cell stays blank.

    Args:
        rows: per row, cells of ``(RGB image, caption, caption colour)`` or None.
        row_labels: one label per row, written at its left.
        title: the figure's title.
    """
    n_columns = max((len(row) for row in rows), default=1) or 1
    figure = Figure(figsize=(TILE_INCHES * n_columns + 1.6, TILE_INCHES * 0.9 * len(rows) + 0.6),
                    layout="constrained")
    grid = figure.subplots(len(rows), n_columns, squeeze=False)
    for row_axes, row, label in zip(grid, rows, row_labels):
        for column, axes in enumerate(row_axes):
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
            cell = row[column] if column < len(row) else None
            if cell is not None:
                image, caption, colour = cell
                axes.imshow(image)
                axes.set_xlabel(caption, fontsize=7, color=colour, labelpad=2)
        row_axes[0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(title)
    return figure


# --- Out-of-fold results -------------------------------------------------------------------------


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Count frames by true class (rows) and predicted class (columns), 10 x 10."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    return confusion_matrix(np.asarray(labels), predicted, labels=np.arange(len(CLASSES)))


def confusion_matrix_figure(labels: np.ndarray, probabilities: np.ndarray, title: str = "") -> Figure:
    """Draw the confusion matrix, shaded by the fraction of each true class, with counts in the cells."""
    counts = confusion_counts(labels, probabilities)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    figure = Figure(figsize=(8, 7), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for true_class in range(len(CLASSES)):
        for predicted_class in range(len(CLASSES)):
            count = counts[true_class, predicted_class]
            if count:
                colour = "white" if fractions[true_class, predicted_class] > 0.5 else "black"
                axes.text(predicted_class, true_class, str(count), ha="center", va="center", fontsize=8,
                          color=colour)
    axes.set_xticks(range(len(CLASSES)), CLASSES)
    axes.set_yticks(range(len(CLASSES)), _class_labels())
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(title or f"Out-of-fold confusion matrix\n{counts.sum()} frames, accuracy {accuracy:.3f}")
    figure.colorbar(image, ax=axes, label="fraction of the true class", shrink=0.8)
    return figure


def per_class_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> pd.Series:
    """Compute Kaggle's log loss over the frames of each true class; NaN for a class without frames."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    losses = {}
    for index, classname in enumerate(CLASSES):
        rows = labels == index
        losses[classname] = log_loss(labels[rows], probabilities[rows]) if rows.any() else np.nan
    return pd.Series(losses, name="log_loss")


def per_class_log_loss_figure(labels: np.ndarray, probabilities: np.ndarray) -> Figure:
    """Draw a bar chart of the log loss per true class, with the overall loss as a line."""
    losses = per_class_log_loss(labels, probabilities)
    overall = log_loss(labels, probabilities)

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(_class_labels()[::-1], losses.to_numpy()[::-1], color="tab:orange")
    for position, loss in enumerate(losses.to_numpy()[::-1]):
        if np.isfinite(loss):
            axes.text(loss, position, f" {loss:.3f}", va="center", fontsize=8)
    axes.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"all frames {overall:.3f}")
    axes.set_xlabel("log loss")
    axes.set_title("Out-of-fold log loss per true class")
    axes.legend(loc="lower right")
    return figure


# --- Training ------------------------------------------------------------------------------------


def learning_curves_figure(histories: Mapping[int, Mapping[str, Sequence[float]]], title: str) -> Figure:
    """Draw each fold's per-epoch training and validation loss in its own panel.

    Args:
        histories: per fold, its history (``loss`` and ``val_loss`` or ``val_log_loss`` per epoch).
        title: the figure's title, e.g. the backbone's label.
    """
    folds = sorted(histories)
    n_columns = min(len(folds), 5) or 1
    n_rows = max(1, -(-len(folds) // n_columns))
    figure = Figure(figsize=(3.2 * n_columns, 2.6 * n_rows + 0.5), layout="constrained")
    grid = figure.subplots(n_rows, n_columns, squeeze=False, sharey=True)
    for axes, fold in zip(grid.flat, folds):
        history = histories[fold]
        for name, style in (("loss", "-"), ("val_loss", "-"), ("val_log_loss", "--")):
            values = history.get(name, [])
            if values:
                axes.plot(range(1, len(values) + 1), values, style, label=name)
        validation = history.get("val_log_loss") or history.get("val_loss") or []
        if validation:
            best = int(np.argmin(validation))
            axes.plot(best + 1, validation[best], "k*", label=f"best {validation[best]:.3f}")
        axes.set_title(f"fold {fold}", fontsize=9)
        axes.set_xlabel("epoch")
        axes.legend(fontsize=7)
    for axes in grid.flat[len(folds):]:
        axes.set_visible(False)
    grid[0, 0].set_ylabel("loss")
    figure.suptitle(f"Learning curves: {title}")
    return figure


# --- Class-activation grids ----------------------------------------------------------------------


@dataclass(frozen=True)
class CamTile:
    """One frame of a class-activation grid: its overlay, its true class and the prediction."""

    overlay: np.ndarray
    img: str
    true_class: str
    predicted_class: str
    probability: float

    @property
    def correct(self) -> bool:
        """Whether the predicted class is the true class."""
        return self.true_class == self.predicted_class

    @property
    def caption(self) -> str:
        """``img_12.jpg: c3 0.91`` when right, ``img_12.jpg: c5 0.77 (true c3)`` when wrong."""
        wrong = "" if self.correct else f" (true {self.true_class})"
        return f"{self.img}: {self.predicted_class} {self.probability:.2f}{wrong}"


def cam_grid_figure(tiles_by_class: Mapping[str, Sequence[CamTile]], columns: int, title: str) -> Figure:
    """Draw class-activation overlays, one row per true class: right predictions in green, wrong in red.

    Args:
        tiles_by_class: per true class, its tiles (right ones first, then wrong ones).
        columns: number of cells per row; missing tiles leave blank cells.
        title: the figure's title.
    """
    rows = []
    for classname in CLASSES:
        tiles = list(tiles_by_class.get(classname, []))[:columns]
        cells = [(tile.overlay, tile.caption, "tab:green" if tile.correct else "tab:red") for tile in tiles]
        rows.append(cells + [None] * (columns - len(cells)))
    return frame_grid_figure(rows, _class_labels(), title)
