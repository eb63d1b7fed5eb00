import math

import numpy as np
import pytest

from kaggle_sf.metrics import EPSILON, accuracy, log_loss


def test_uniform_prediction_scores_log_of_class_count():
    probabilities = np.full((4, 10), 0.1)
    assert log_loss([0, 3, 5, 9], probabilities) == pytest.approx(math.log(10))


def test_known_values_match_hand_computation():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    expected = -(math.log(0.7) + math.log(0.3)) / 2
    assert log_loss([0, 1], probabilities) == pytest.approx(expected)


def test_rows_are_normalised_before_scoring():
    assert log_loss([0], [[2.0, 1.0, 1.0]]) == pytest.approx(-math.log(0.5))


def test_certain_mistake_is_clipped_like_kaggle():
    assert log_loss([1], [[1.0, 0.0]]) == pytest.approx(-math.log(EPSILON))
    assert log_loss([0], [[1.0, 0.0]]) == pytest.approx(-math.log(1 - EPSILON))


def test_one_hot_labels_equal_index_labels():
    probabilities = np.array([[0.6, 0.4], [0.2, 0.8]])
    assert log_loss(np.eye(2), probabilities) == pytest.approx(log_loss([0, 1], probabilities))


def test_matches_scikit_learn_on_random_rows():
    from sklearn.metrics import log_loss as sklearn_log_loss

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=50)
    labels = rng.integers(0, 10, size=50)
    assert log_loss(labels, probabilities) == pytest.approx(sklearn_log_loss(labels, probabilities, labels=range(10)))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        log_loss([0, 1], np.full((3, 10), 0.1))
    with pytest.raises(ValueError, match="class indices"):
        log_loss([10], np.full((1, 10), 0.1))


def test_accuracy_counts_argmax_hits():
    assert accuracy([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]) == pytest.approx(2 / 3)
