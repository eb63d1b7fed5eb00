import numpy as np
import pytest

from kaggle_sf.blend import blend, fit_blend_weights, fit_per_class_selection, select_per_class
from kaggle_sf.metrics import log_loss


def random_members(n_members: int, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Members whose rows are random points of the simplex, shape (n_members, n_rows, 10)."""
    return rng.dirichlet(np.full(10, 0.5), size=(n_members, n_rows))


def sample_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one class per row from that row's distribution."""
    cumulative = probabilities.cumsum(axis=1)
    return (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(max=probabilities.shape[1] - 1)


@pytest.mark.parametrize("kind", ["arithmetic", "geometric"])
def test_blend_weights_stay_on_simplex(kind):
    rng = np.random.default_rng(1)
    members = random_members(4, 500, rng)
    labels = rng.integers(0, 10, size=500)

    weights = fit_blend_weights(members, labels, kind)

    assert weights.shape == (4,)
    assert (weights >= 0).all()
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)


def test_arithmetic_blend_recovers_known_mixture():
    rng = np.random.default_rng(2)
    members = random_members(3, 20_000, rng)
    truth = np.array([0.7, 0.3, 0.0])
    labels = sample_labels(blend(members, truth, "arithmetic"), rng)

    weights = fit_blend_weights(members, labels, "arithmetic")

    assert weights == pytest.approx(truth, abs=0.03)


def test_geometric_blend_recovers_known_mixture():
    rng = np.random.default_rng(3)
    members = random_members(3, 20_000, rng)
    truth = np.array([0.6, 0.0, 0.4])
    labels = sample_labels(blend(members, truth, "geometric"), rng)

    weights = fit_blend_weights(members, labels, "geometric")

    assert weights == pytest.approx(truth, abs=0.03)


@pytest.mark.parametrize("kind", ["arithmetic", "geometric"])
def test_blend_never_worse_than_best_member(kind):
    rng = np.random.default_rng(4)
    members = random_members(3, 300, rng)
    labels = sample_labels(members[1], rng)

    weights = fit_blend_weights(members, labels, kind)

    best_single = min(log_loss(labels, m) for m in members)
    assert log_loss(labels, blend(members, weights, kind)) <= best_single + 1e-12


def test_blend_rows_sum_to_one():
    rng = np.random.default_rng(5)
    members = random_members(2, 50, rng) * 3.0  # unnormalised scores are normalised first

    for kind in ("arithmetic", "geometric"):
        assert blend(members, np.array([0.25, 0.75]), kind).sum(axis=1) == pytest.approx(np.ones(50))


def test_blend_rejects_unknown_kind():
    with pytest.raises(ValueError, match="harmonic"):
        blend(np.ones((1, 2, 10)), np.ones(1), "harmonic")


def test_per_class_selection_finds_experts():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, size=4000)
    onehot = np.eye(10)[labels]
    # Member 0 is sharp on classes 0-4 and flat elsewhere; member 1 the other way round.
    sharp_first = np.where(np.arange(10) < 5, 1.0, 0.0)
    members = np.stack([0.1 + 0.8 * onehot * sharp_first, 0.1 + 0.8 * onehot * (1 - sharp_first)])

    choice = fit_per_class_selection(members, labels)

    assert choice.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    selected = select_per_class(members, choice)
    assert log_loss(labels, selected) < min(log_loss(labels, m) for m in members)


def test_per_class_selection_never_worse_than_best_member():
    rng = np.random.default_rng(7)
    members = random_members(3, 400, rng)
    labels = sample_labels(members[2], rng)

    choice = fit_per_class_selection(members, labels)

    best_single = min(log_loss(labels, m) for m in members)
    assert log_loss(labels, select_per_class(members, choice)) <= best_single + 1e-12
