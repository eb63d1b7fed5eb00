"""Constructed inputs for the blend-stage tests: folds of drivers, noisy fold-model predictions, features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kaggle_sf.config import CLASSES
from kaggle_sf.train import FoldResult, prediction_table

N_CLASSES = len(CLASSES)


def make_folds_table(n_subjects: int = 6, frames_per_video: int = 6, n_folds: int = 3) -> pd.DataFrame:
    """Return ``img, subject, classname, fold``: every driver has one video of each class, drivers dealt to folds."""
    rows = []
    for s in range(n_subjects):
        for c in range(N_CLASSES):
            for frame in range(frames_per_video):
                rows.append((f"img_{s}_{c}_{frame}.jpg", f"p{s:03d}", f"c{c}", s % n_folds))
    return pd.DataFrame(rows, columns=["img", "subject", "classname", "fold"])


def noisy_predictions(labels: np.ndarray, strength: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Return softmax(strength * one-hot(labels) + noise * N(0, 1)): higher strength, better model."""
    logits = strength * np.eye(N_CLASSES)[labels] + noise * rng.standard_normal((len(labels), N_CLASSES))
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def fold_results(folds: pd.DataFrame, oof: np.ndarray, test_ids: list[str],
                 test: dict[int, np.ndarray]) -> list[FoldResult]:
    """Split OOF probabilities (rows in ``folds`` order) into one FoldResult per fold, ids alongside."""
    results = []
    for fold in sorted(folds["fold"].unique()):
        in_fold = (folds["fold"] == fold).to_numpy()
        results.append(FoldResult(fold=int(fold), oof=prediction_table(folds.loc[in_fold, "img"], oof[in_fold]),
                                  test=prediction_table(test_ids, test[int(fold)]),
                                  metrics={"val_log_loss": 0.0}))
    return results


def labels_of(folds: pd.DataFrame) -> np.ndarray:
    """Class index of each row of ``folds``."""
    return folds["classname"].str[1:].astype(int).to_numpy()


def video_features(folds: pd.DataFrame, rng: np.random.Generator, spread: float = 0.05) -> np.ndarray:
    """Features where frames of one video (driver and class) lie close together and videos lie apart."""
    videos = (folds["subject"] + "/" + folds["classname"]).to_numpy()
    centres = {video: rng.standard_normal(32) for video in np.unique(videos)}
    return np.stack([centres[v] for v in videos]) + spread * rng.standard_normal((len(folds), 32))
