import numpy as np
import pytest

from kaggle_sf.metrics import log_loss
from kaggle_sf.selection import feature_space
from kaggle_sf.smoothing import Smoothing, fit_smoothing, neighbour_indices, neighbour_means, smooth
from tests.blend_data import labels_of, make_folds_table, noisy_predictions, video_features


def test_neighbours_come_from_own_group_and_never_self():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((90, 8))
    groups = np.repeat([0, 1, 2], 30)

    neighbours = neighbour_indices(features, groups, max_neighbours=5)

    assert neighbours.shape == (90, 5)
    assert (groups[neighbours] == groups[:, None]).all()
    assert (neighbours != np.arange(90)[:, None]).all()


def test_neighbours_exclude_self_among_exact_duplicates():
    features = np.ones((6, 4))  # six identical frames: every distance ties at zero

    neighbours = neighbour_indices(features, np.zeros(6), max_neighbours=3)

    assert (neighbours != np.arange(6)[:, None]).all()
    assert all(len(set(row)) == 3 for row in neighbours.tolist())


def test_neighbours_are_nearest_first_by_cosine_distance():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])

    neighbours = neighbour_indices(features, np.zeros(4), max_neighbours=3)

    assert neighbours[0].tolist() == [1, 2, 3]
    assert neighbours[3].tolist() == [2, 1, 0]


def test_neighbour_count_is_capped_by_smallest_group():
    features = np.random.default_rng(1).standard_normal((7, 3))

    neighbours = neighbour_indices(features, np.array([0, 0, 0, 1, 1, 1, 1]), max_neighbours=10)

    assert neighbours.shape == (7, 2)


def test_oof_neighbours_never_cross_validation_folds():
    # Frames of other folds are the training drivers of a fold's model, so they must never be neighbours.
    folds = make_folds_table(n_subjects=6, n_folds=3)
    rng = np.random.default_rng(2)
    features = rng.standard_normal((len(folds), 16))
    fold = folds["fold"].to_numpy()

    space = feature_space(features, fold, features[:12], max_neighbours=8)

    assert (fold[space.oof_neighbours] == fold[:, None]).all()
    assert (space.oof_neighbours != np.arange(len(folds))[:, None]).all()
    assert space.test_neighbours.shape == (12, 8)


def test_smooth_matches_hand_computation():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    neighbours = np.array([[1, 2], [0, 2], [0, 1]])

    smoothed = smooth(probabilities, neighbours, n_neighbours=2, weight=0.4)

    assert smoothed[0] == pytest.approx([0.6 * 1.0 + 0.4 * 0.25, 0.6 * 0.0 + 0.4 * 0.75])
    assert neighbour_means(probabilities, neighbours)[0, 1] == pytest.approx([0.25, 0.75])


def test_smoothing_helps_on_videos_and_is_chosen():
    folds = make_folds_table(n_subjects=6, frames_per_video=8, n_folds=3)
    rng = np.random.default_rng(3)
    labels = labels_of(folds)
    probabilities = noisy_predictions(labels, strength=1.0, noise=1.5, rng=rng)
    neighbours = neighbour_indices(video_features(folds, rng), folds["fold"].to_numpy(), max_neighbours=10)
    rows = np.ones(len(folds), dtype=bool)

    setting = fit_smoothing(probabilities, labels, rows, {"space": neighbours}, (1, 3, 7), (0.3, 0.6, 0.9))

    assert setting.enabled
    assert setting.n_neighbours == 7
    smoothed = smooth(probabilities, neighbours, setting.n_neighbours, setting.weight)
    assert log_loss(labels, smoothed) < log_loss(labels, probabilities) - 0.1


def test_smoothing_is_left_out_when_neighbours_are_unrelated():
    folds = make_folds_table(n_subjects=6, n_folds=3)
    rng = np.random.default_rng(4)
    labels = labels_of(folds)
    probabilities = noisy_predictions(labels, strength=3.0, noise=0.5, rng=rng)
    # Neighbours that always have another class: averaging with them only hurts.
    order = np.argsort(labels, kind="stable")
    neighbours = np.roll(order, len(folds) // 2)[np.argsort(order)][:, None]

    setting = fit_smoothing(probabilities, labels, np.ones(len(folds), dtype=bool), {"space": neighbours},
                            (1,), (0.3, 0.6))

    assert setting == Smoothing()
    assert not setting.enabled


def test_smoothing_fit_reads_labels_of_fitted_rows_only():
    folds = make_folds_table(n_subjects=6, frames_per_video=8, n_folds=3)
    rng = np.random.default_rng(5)
    labels = labels_of(folds)
    probabilities = noisy_predictions(labels, strength=1.0, noise=1.5, rng=rng)
    neighbours = neighbour_indices(video_features(folds, rng), folds["fold"].to_numpy(), max_neighbours=10)
    rows = folds["subject"].isin(["p000", "p001", "p002"]).to_numpy()
    scrambled = labels.copy()
    scrambled[~rows] = rng.permutation(scrambled[~rows])

    setting = fit_smoothing(probabilities, labels, rows, {"space": neighbours}, (1, 3, 7), (0.3, 0.6, 0.9))
    scrambled_setting = fit_smoothing(probabilities, scrambled, rows, {"space": neighbours}, (1, 3, 7),
                                      (0.3, 0.6, 0.9))

    assert setting == scrambled_setting


def test_smooth_caps_neighbour_count_at_searched_columns():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    neighbours = np.array([[1], [0]])

    assert smooth(probabilities, neighbours, n_neighbours=5, weight=1.0) == pytest.approx(probabilities[::-1])
