"""Calibration of blended probabilities: temperature scaling or plain clipping, whichever OOF prefers.

Temperature scaling divides log probabilities by T and renormalises: T > 1 softens over-confident
predictions, T < 1 sharpens timid ones, and T = 1 changes nothing. Clipping bounds the loss of a
confident mistake. Both are fitted on out-of-fold (OOF) predictions, and the fit keeps "no calibration"
among its options, so on the rows it is fitted on it never raises the log loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from kaggle_sf.metrics import EPSILON, log_loss
from kaggle_sf.submission import clip_and_normalise

TEMPERATURE_RANGE = (0.05, 20.0)
"""Search bounds for T. At 20, softmax outputs become nearly uniform, and at 0.05 nearly one-hot."""


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Return ``softmax(log p / T)`` row by row."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    logits = np.log(np.clip(normalised, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: temperature scaling, then clipping to [clip, 1 - clip]."""

    temperature: float = 1.0
    clip: float = 0.0

    @property
    def kind(self) -> str:
        """``none``, ``clip``, ``temperature`` or ``temperature+clip``."""
        parts = [name for name, used in (("temperature", self.temperature != 1.0), ("clip", self.clip > 0)) if used]
        return "+".join(parts) or "none"

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrate probabilities of shape (n_rows, n_classes); rows of the result sum to one."""
        scaled = apply_temperature(probabilities, self.temperature) if self.temperature != 1.0 else probabilities
        return clip_and_normalise(scaled, self.clip)

    def describe(self) -> str:
        """Return a short description, e.g. ``temperature 1.31, clip 0.001``."""
        parts = []
        if self.temperature != 1.0:
            parts.append(f"temperature {self.temperature:.3g}")
        if self.clip > 0:
            parts.append(f"clip {self.clip:g}")
        return ", ".join(parts) or "none"


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature that minimises the log loss on these rows, or 1 when none improves on it."""
    def loss_at(log_temperature: float) -> float:
        return log_loss(labels, apply_temperature(probabilities, float(np.exp(log_temperature))))

    found = minimize_scalar(loss_at, bounds=tuple(np.log(TEMPERATURE_RANGE)), method="bounded",
                            options={"xatol": 1e-4})
    temperature = float(np.exp(found.x))
    return temperature if loss_at(found.x) < log_loss(labels, probabilities) else 1.0


def fit_calibration(probabilities: np.ndarray, labels: np.ndarray, clip: float) -> Calibration:
    """Choose among no calibration, clipping at ``clip``, a fitted temperature, and both, by log loss.

    Args:
        probabilities: OOF probabilities, shape (n_rows, n_classes).
        labels: class index of each row.
        clip: the clipping bound to try; 0 leaves clipping out.

    Returns:
        The option with the lowest log loss on these rows; ties go to the simpler option.
    """
    temperature = fit_temperature(probabilities, labels)
    options = [Calibration()]
    if clip > 0:
        options.append(Calibration(clip=clip))
    if temperature != 1.0:
        options.append(Calibration(temperature=temperature))
        if clip > 0:
            options.append(Calibration(temperature=temperature, clip=clip))
    losses = [log_loss(labels, option.apply(probabilities)) for option in options]
    return options[int(np.argmin(losses))]
