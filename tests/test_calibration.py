import numpy as np
import pytest

from kaggle_sf.calibration import Calibration, apply_temperature, fit_calibration, fit_temperature
from kaggle_sf.metrics import log_loss


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrated_sample(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits), so softmax(logits) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((n_rows, 10))
    truth = softmax(logits)
    labels = (rng.random((n_rows, 1)) > truth.cumsum(axis=1)).sum(axis=1).clip(max=9)
    return logits, labels


def test_temperature_one_changes_nothing():
    logits, _ = calibrated_sample(20, seed=0)
    assert apply_temperature(softmax(logits), 1.0) == pytest.approx(softmax(logits))


def test_fitted_temperature_undoes_over_confidence():
    logits, labels = calibrated_sample(20_000, seed=1)
    over_confident = softmax(2.0 * logits)

    assert fit_temperature(over_confident, labels) == pytest.approx(2.0, rel=0.08)


def test_fitted_temperature_undoes_under_confidence():
    logits, labels = calibrated_sample(20_000, seed=2)
    timid = softmax(0.5 * logits)

    assert fit_temperature(timid, labels) == pytest.approx(0.5, rel=0.08)


@pytest.mark.parametrize("sharpness", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("clip", [0.0, 1e-3, 0.05])
def test_calibration_never_raises_oof_loss(sharpness, clip):
    logits, labels = calibrated_sample(2_000, seed=3)
    probabilities = softmax(sharpness * logits)

    calibration = fit_calibration(probabilities, labels, clip)

    assert log_loss(labels, calibration.apply(probabilities)) <= log_loss(labels, probabilities) + 1e-12


def test_calibrated_input_keeps_temperature_one():
    logits, labels = calibrated_sample(20_000, seed=4)

    calibration = fit_calibration(softmax(logits), labels, clip=0.0)

    assert calibration.temperature == pytest.approx(1.0, abs=0.05)


def test_calibration_picks_lowest_loss_option():
    # Mostly right and certain, with a few certain mistakes: any calibration beats none here.
    labels = np.zeros(100, dtype=int)
    probabilities = np.full((100, 10), 1e-12)
    probabilities[:, 0] = 1.0
    probabilities[:3] = np.roll(probabilities[:3], 1, axis=1)
    temperature = fit_temperature(probabilities, labels)
    options = [Calibration(), Calibration(clip=1e-3), Calibration(temperature=temperature),
               Calibration(temperature=temperature, clip=1e-3)]

    calibration = fit_calibration(probabilities, labels, clip=1e-3)

    chosen_loss = log_loss(labels, calibration.apply(probabilities))
    assert calibration.kind != "none"
    assert chosen_loss == pytest.approx(min(log_loss(labels, o.apply(probabilities)) for o in options))
    assert chosen_loss < log_loss(labels, probabilities) / 4


def test_clipping_chosen_for_lone_mistake():
    # Calibrated soft predictions plus one certain mistake: T stays near 1, and clipping caps the mistake.
    logits, labels = calibrated_sample(2_000, seed=6)
    probabilities = softmax(logits)
    probabilities[0] = 1e-12
    probabilities[0, (labels[0] + 1) % 10] = 1.0

    calibration = fit_calibration(probabilities, labels, clip=1e-3)

    assert calibration.clip == 1e-3
    assert log_loss(labels, calibration.apply(probabilities)) < log_loss(labels, probabilities)


def test_calibrated_rows_sum_to_one():
    logits, _ = calibrated_sample(50, seed=5)
    calibrated = Calibration(temperature=1.7, clip=1e-3).apply(softmax(logits))

    assert calibrated.sum(axis=1) == pytest.approx(np.ones(50))
    assert calibrated.min() >= 1e-3 / 1.01


def test_calibration_describes_itself():
    assert Calibration().kind == "none"
    assert Calibration(clip=1e-3).kind == "clip"
    assert Calibration(temperature=1.5, clip=1e-3).kind == "temperature+clip"
    assert Calibration(temperature=1.5).describe() == "temperature 1.5"


def test_non_positive_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature must be positive"):
        apply_temperature(np.full((1, 10), 0.1), 0.0)
