"""Neighbour smoothing: each frame's prediction averaged with those of its nearest frames.

Frames of one video share a class, and its neighbouring frames lie close in bottleneck-feature space,
so averaging a frame's prediction with its k nearest frames' predictions evens out frames that a
model gets wrong alone. The smoothed prediction is ``(1 - w) * p_i + w * mean(p_j for j in kNN(i))``.

Neighbours are searched within groups only. On out-of-fold (OOF) rows the group is the validation
fold, so a frame's neighbours are frames of the same held-out drivers, never training drivers of that
fold's model. On the test set there is one group. Only predictions are averaged, never labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from kaggle_sf.metrics import log_loss


def neighbour_indices(features: np.ndarray, groups: np.ndarray, max_neighbours: int) -> np.ndarray:
    """Find each row's nearest rows by cosine distance among the rows of its own group, excluding itself.

    Args:
        features: shape (n_rows, n_features).
        groups: group of each row, shape (n_rows,); a row's neighbours come from its group only.
        max_neighbours: how many neighbours to return; reduced to one less than the smallest group.

    Returns:
        Row positions, shape (n_rows, k), nearest first, with k = min(max_neighbours, smallest group - 1).
    """
    features = np.asarray(features, dtype=np.float64)
    groups = np.asarray(groups)
    if len(features) != len(groups):
        raise ValueError(f"{len(features)} feature rows for {len(groups)} groups")
    group_sizes = np.unique(groups, return_counts=True)[1]
    k = int(min(max_neighbours, group_sizes.min() - 1)) if len(group_sizes) else 0
    neighbours = np.zeros((len(features), max(k, 0)), dtype=np.int64)
    if k <= 0:
        return neighbours

    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        search = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute")
        found = search.fit(features[members]).kneighbors(features[members], return_distance=False)
        # A row is usually its own first hit, but exact duplicates can tie with it: drop the row itself
        # wherever it landed, and the (k+1)-th hit when it did not land in the list at all.
        is_self = found == np.arange(len(members))[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")
        nearest = np.take_along_axis(found, order, axis=1)[:, :k]
        neighbours[members] = members[nearest]
    return neighbours


def neighbour_means(probabilities: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Return the mean prediction of the first 1, 2, ..., K neighbours: shape (n_rows, K, n_classes)."""
    gathered = probabilities[neighbours]
    counts = np.arange(1, neighbours.shape[1] + 1)[None, :, None]
    return np.cumsum(gathered, axis=1) / counts


def smooth(probabilities: np.ndarray, neighbours: np.ndarray, n_neighbours: int, weight: float) -> np.ndarray:
    """Blend each row's prediction with the mean of its first ``n_neighbours`` neighbours' predictions.

    ``n_neighbours`` is capped at the number of columns of ``neighbours``, which is smaller when a group
    has few rows (a test set of a handful of frames).
    """
    n_neighbours = min(n_neighbours, neighbours.shape[1])
    if weight == 0 or n_neighbours == 0:
        return probabilities
    mean = probabilities[neighbours[:, :n_neighbours]].mean(axis=1)
    return (1 - weight) * probabilities + weight * mean


@dataclass(frozen=True)
class Smoothing:
    """A fitted smoothing: which feature space, how many neighbours, and the neighbours' weight."""

    space: str = ""
    n_neighbours: int = 0
    weight: float = 0.0

    @property
    def enabled(self) -> bool:
        """False when the fit found no smoothing better than none."""
        return self.weight > 0 and self.n_neighbours > 0

    def describe(self) -> str:
        """Return a short description, e.g. ``5 neighbours in mobilenet_0.25_224x224, weight 0.6``."""
        if not self.enabled:
            return "none"
        return f"{self.n_neighbours} neighbours in {self.space}, weight {self.weight:g}"


def fit_smoothing(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                  neighbours_by_space: Mapping[str, np.ndarray], neighbour_counts: Sequence[int],
                  weights: Sequence[float]) -> Smoothing:
    """Choose the feature space, neighbour count and weight with the lowest log loss on ``rows``.

    Args:
        probabilities: OOF probabilities of all rows, shape (n_rows, n_classes).
        labels: class index of each row; only ``labels[rows]`` is read.
        rows: boolean mask of the rows scored; neighbours may lie outside it, since only their
            predictions are used.
        neighbours_by_space: neighbour positions per feature space, from :func:`neighbour_indices`.
        neighbour_counts, weights: the grid searched.

    Returns:
        The best setting, or no smoothing when none beats the unsmoothed predictions.
    """
    best, best_loss = Smoothing(), log_loss(labels[rows], probabilities[rows])
    for space, neighbours in neighbours_by_space.items():
        means = neighbour_means(probabilities, neighbours[rows])
        for count in neighbour_counts:
            if count > neighbours.shape[1]:
                continue
            for weight in weights:
                smoothed = (1 - weight) * probabilities[rows] + weight * means[:, count - 1]
                loss = log_loss(labels[rows], smoothed)
                if loss < best_loss - 1e-12:
                    best, best_loss = Smoothing(space, int(count), float(weight)), loss
    return best
