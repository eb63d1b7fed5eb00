"""Kaggle's multi-class log loss: the one function behind every loss this toolkit reports."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EPSILON = 1e-15
"""Kaggle clips each probability to [EPSILON, 1 - EPSILON] after dividing each row by its sum."""


def log_loss(labels: ArrayLike, probabilities: ArrayLike) -> float:
    """Compute the multi-class log loss exactly as Kaggle scores a submission.

    Each row is divided by its sum, then clipped to [1e-15, 1 - 1e-15], and the loss is the mean over
    rows of minus the log of the probability given to the true class.

    Args:
        labels: true class indices, shape (n,), or one-hot rows, shape (n, k).
        probabilities: predicted scores, shape (n, k); rows need not sum to one.

    Returns:
        The mean log loss in nats.

    Raises:
        ValueError: the shapes disagree, a label is out of range, or there are no rows.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(f"probabilities must have shape (n, k) with n > 0, got {probabilities.shape}")
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if labels.shape != (probabilities.shape[0],):
        raise ValueError(f"{labels.shape[0]} labels for {probabilities.shape[0]} rows of probabilities")
    n_classes = probabilities.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be class indices in [0, {n_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")

    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    clipped = np.clip(normalised, EPSILON, 1 - EPSILON)
    return float(-np.log(clipped[np.arange(len(labels)), labels]).mean())


def accuracy(labels: ArrayLike, probabilities: ArrayLike) -> float:
    """Return the fraction of rows whose highest probability is on the true class."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    return float((probabilities.argmax(axis=1) == labels).mean())
