"""Charts of the data and of out-of-fold results, and the choice of frames for class-activation grids."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from kaggle_sf.config import CLASSES
from kaggle_sf.explain import charts
from kaggle_sf.explain.report import pick_cam_frames


def png_shape(figure) -> tuple[int, ...]:
    """Render a figure to PNG with the Agg backend and return the decoded image's shape."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return imread(buffer, format="png").shape


def train_table() -> pd.DataFrame:
    """Three drivers: p001 has 2 frames of c0 and 1 of c1, p002 has 1 of c0, p003 has 3 of c9."""
    rows = [("p001", "c0"), ("p001", "c0"), ("p001", "c1"), ("p002", "c0"), ("p003", "c9"), ("p003", "c9"),
            ("p003", "c9")]
    return pd.DataFrame({"img": [f"img_{i}.jpg" for i in range(len(rows))],
                         "subject": [subject for subject, _ in rows],
                         "classname": [classname for _, classname in rows]})


def one_hot(classes: list[int], confidence: float = 0.91) -> np.ndarray:
    probabilities = np.full((len(classes), 10), (1 - confidence) / 9)
    probabilities[np.arange(len(classes)), classes] = confidence
    return probabilities


# --- The data ------------------------------------------------------------------------------------


def test_frames_per_class_counts_every_class():
    counts = charts.frames_per_class(train_table())
    assert counts.index.tolist() == list(CLASSES)
    assert counts.tolist() == [3, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert len(png_shape(charts.frames_per_class_figure(train_table()))) == 3


def test_frames_per_driver_splits_by_class():
    counts = charts.frames_per_driver(train_table())
    assert counts.index.tolist() == ["p001", "p002", "p003"]
    assert counts.loc["p001", ["c0", "c1", "c9"]].tolist() == [2, 1, 0]
    assert counts.loc["p003", "c9"] == 3
    assert counts.sum(axis=1).tolist() == [3, 1, 3]
    assert len(png_shape(charts.frames_per_driver_figure(train_table()))) == 3


def test_sample_frames_prefer_different_drivers():
    samples = charts.sample_frames(train_table(), per_class=2, seed=1)
    c0 = samples[samples["classname"] == "c0"]
    assert len(c0) == 2
    assert sorted(c0["subject"]) == ["p001", "p002"]
    assert samples.groupby("classname").size().to_dict() == {"c0": 2, "c1": 1, "c9": 2}


def test_frame_grid_leaves_none_cells_blank():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    figure = charts.frame_grid_figure([[(image, "a", "black"), None], [None, (image, "b", "red")]],
                                      ["row 1", "row 2"], "grid")
    images = [axes for axes in figure.axes if axes.images]
    assert len(figure.axes) == 4
    assert len(images) == 2
    assert [axes.get_xlabel() for axes in images] == ["a", "b"]


# --- Out-of-fold results -------------------------------------------------------------------------


def test_confusion_counts_rows_are_true_classes():
    labels = np.array([0, 0, 0, 3, 3, 9])
    probabilities = one_hot([0, 0, 3, 3, 9, 9])
    counts = charts.confusion_counts(labels, probabilities)
    assert counts.shape == (10, 10)
    assert counts[0, 0] == 2
    assert counts[0, 3] == 1
    assert counts[3, 3] == 1
    assert counts[3, 9] == 1
    assert counts[9, 9] == 1
    assert counts.sum() == 6

    figure = charts.confusion_matrix_figure(labels, probabilities)
    cell_texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert cell_texts == ["1", "1", "1", "1", "2"]
    assert figure.axes[0].get_title().endswith("6 frames, accuracy 0.667")
    assert len(png_shape(figure)) == 3


def test_per_class_log_loss_values():
    labels = np.array([0, 0, 1])
    probabilities = np.full((3, 10), 0.05)
    probabilities[0, 0], probabilities[1, 0], probabilities[2, 1] = 0.55, 0.1, 0.8
    losses = charts.per_class_log_loss(labels, probabilities)
    # Rows are divided by their sums (1.0, 0.55 and 1.25) before the log, as Kaggle does.
    assert losses["c0"] == pytest.approx(-(np.log(0.55) + np.log(0.1 / 0.55)) / 2)
    assert losses["c1"] == pytest.approx(-np.log(0.8 / 1.25))
    assert np.isnan(losses["c2"])
    assert len(png_shape(charts.per_class_log_loss_figure(labels, probabilities))) == 3


# --- Training ------------------------------------------------------------------------------------


def test_learning_curves_panel_per_fold():
    histories = {0: {"loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.4, 1.6]},
                 1: {"loss": [2.2, 1.7], "val_log_loss": [2.0, 1.8]},
                 2: {"loss": [2.1], "val_loss": [1.9]}}
    figure = charts.learning_curves_figure(histories, "mobilenet_0.25_224x224")
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["fold 0", "fold 1", "fold 2"]
    best = [line for line in panels[0].lines if line.get_label().startswith("best")]
    assert best[0].get_label() == "best 1.400"
    assert best[0].get_xdata().tolist() == [2]
    assert len(png_shape(figure)) == 3


# --- Class-activation grids ----------------------------------------------------------------------


def test_pick_cam_frames_order():
    truth = pd.DataFrame({"img": [f"img_{i}.jpg" for i in range(6)],
                          "subject": ["p1", "p1", "p2", "p1", "p2", "p2"],
                          "classname": ["c0", "c0", "c0", "c0", "c0", "c5"]})
    probabilities = np.vstack([one_hot([0], 0.9), one_hot([0], 0.95), one_hot([0], 0.6), one_hot([3], 0.7),
                               one_hot([4], 0.8), one_hot([5], 0.99)])
    oof = pd.DataFrame(probabilities, columns=list(CLASSES)).assign(img=truth["img"], fold=[0, 0, 1, 0, 1, 1])

    chosen = pick_cam_frames(oof, truth, per_class=2)
    c0 = chosen[chosen["classname"] == "c0"]
    # Right: img_1 (0.95, p1), then img_2 (p2) before p1's second frame img_0. Wrong: img_4 (0.8), img_3.
    assert c0["img"].tolist() == ["img_1.jpg", "img_2.jpg", "img_4.jpg", "img_3.jpg"]
    assert c0["correct"].tolist() == [True, True, False, False]
    assert c0["predicted"].tolist() == ["c0", "c0", "c4", "c3"]
    assert c0["probability"].tolist() == pytest.approx([0.95, 0.6, 0.8, 0.7])
    assert chosen.loc[chosen["classname"] == "c5", "img"].tolist() == ["img_5.jpg"]
    assert chosen["fold"].tolist() == [0, 1, 1, 0, 1]


def test_cam_grid_rows_and_colours():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    tiles = {"c3": [charts.CamTile(image, "img_1.jpg", "c3", "c3", 0.91),
                    charts.CamTile(image, "img_2.jpg", "c3", "c5", 0.77)]}
    assert tiles["c3"][1].caption == "img_2.jpg: c5 0.77 (true c3)"
    figure = charts.cam_grid_figure(tiles, columns=4, title="grid")
    assert len(figure.axes) == 40
    filled = [axes for axes in figure.axes if axes.images]
    assert [axes.get_xlabel() for axes in filled] == ["img_1.jpg: c3 0.91", "img_2.jpg: c5 0.77 (true c3)"]
    assert [axes.xaxis.label.get_color() for axes in filled] == ["tab:green", "tab:red"]
    assert len(png_shape(figure)) == 3
