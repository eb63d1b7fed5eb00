"""Blends of members' predictions: simplex weights fitted on OOF predictions, and per-class selection.

An arithmetic blend averages probabilities, ``q = sum_m w_m p_m``; a geometric blend averages log
probabilities, ``q ~ prod_m p_m ** w_m``, renormalised per row. Both fit non-negative weights that sum
to one by minimising the OOF log loss, which is convex in the weights for either kind, so the optimum
found from the uniform start is the global one.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from kaggle_sf.metrics import EPSILON, log_loss

BLEND_KINDS = ("arithmetic", "geometric")


def _log_probabilities(member_probabilities: np.ndarray) -> np.ndarray:
    normalised = member_probabilities / member_probabilities.sum(axis=2, keepdims=True)
    return np.log(np.clip(normalised, EPSILON, 1.0))


def blend(member_probabilities: np.ndarray, weights: np.ndarray, kind: str) -> np.ndarray:
    """Combine members' probabilities with ``weights``.

    Args:
        member_probabilities: shape (n_members, n_rows, n_classes).
        weights: shape (n_members,), non-negative, summing to one.
        kind: ``arithmetic`` or ``geometric``.

    Returns:
        Probabilities of shape (n_rows, n_classes), rows summing to one.
    """
    if kind not in BLEND_KINDS:
        raise ValueError(f"blend kind must be one of {BLEND_KINDS}, got {kind!r}")
    weights = np.asarray(weights, dtype=np.float64)
    if kind == "arithmetic":
        normalised = member_probabilities / member_probabilities.sum(axis=2, keepdims=True)
        return np.tensordot(weights, normalised, axes=1)
    return _geometric(weights, _log_probabilities(member_probabilities))


def _geometric(weights: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    logits = np.tensordot(weights, log_p, axes=1)
    logits -= logits.max(axis=1, keepdims=True)
    unnormalised = np.exp(logits)
    return unnormalised / unnormalised.sum(axis=1, keepdims=True)


def _loss_and_gradient(weights: np.ndarray, log_p: np.ndarray, labels: np.ndarray,
                       kind: str) -> tuple[float, np.ndarray]:
    rows = np.arange(len(labels))
    true_log_p = log_p[:, rows, labels]
    if kind == "arithmetic":
        true_p = np.exp(true_log_p)
        mixture = np.clip(weights @ true_p, EPSILON, None)
        return float(-np.log(mixture).mean()), -(true_p / mixture).mean(axis=1)
    blended = _geometric(weights, log_p)
    log_blended = np.log(np.clip(blended[rows, labels], EPSILON, None))
    # d/dw_m of log q_y is log p_my minus the blend-weighted mean of log p_m over classes.
    expected_log_p = np.einsum("rc,mrc->mr", blended, log_p)
    return float(-log_blended.mean()), -(true_log_p - expected_log_p).mean(axis=1)


def fit_blend_weights(member_probabilities: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
    """Fit the weights (non-negative, summing to one) that minimise the log loss of ``blend``.

    The result is never worse on these rows than the best single member or the plain average, since
    both are checked against the optimiser's result.

    Args:
        member_probabilities: shape (n_members, n_rows, n_classes).
        labels: class index of each row.
        kind: ``arithmetic`` or ``geometric``.

    Returns:
        Weights of shape (n_members,).
    """
    if kind not in BLEND_KINDS:
        raise ValueError(f"blend kind must be one of {BLEND_KINDS}, got {kind!r}")
    n_members = member_probabilities.shape[0]
    uniform = np.full(n_members, 1.0 / n_members)
    if n_members == 1:
        return uniform
    log_p = _log_probabilities(member_probabilities)
    solution = minimize(_loss_and_gradient, uniform, args=(log_p, labels, kind), jac=True, method="SLSQP",
                        bounds=[(0.0, 1.0)] * n_members,
                        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                        options={"maxiter": 200, "ftol": 1e-10})
    fitted = np.clip(solution.x, 0.0, None)
    fitted = fitted / fitted.sum() if fitted.sum() > 0 else uniform

    # SLSQP can stop early on flat regions; the uniform start and each single member are safe fallbacks.
    starts = [fitted, uniform, *np.eye(n_members)]
    losses = [log_loss(labels, blend(member_probabilities, w, kind)) for w in starts]
    return starts[int(np.argmin(losses))]


def select_per_class(member_probabilities: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Take class column c from member ``choice[c]``, then renormalise each row."""
    columns = np.arange(member_probabilities.shape[2])
    normalised = member_probabilities / member_probabilities.sum(axis=2, keepdims=True)
    selected = normalised[choice, :, columns].T
    return selected / selected.sum(axis=1, keepdims=True)


def fit_per_class_selection(member_probabilities: np.ndarray, labels: np.ndarray,
                            max_passes: int = 5) -> np.ndarray:
    """Choose, for each class column, the member whose column gives the lowest overall log loss.

    Coordinate descent from the best single member: each pass tries every member for every column and
    keeps a change only when the log loss of the renormalised rows drops, so the result is never worse
    on these rows than the best single member.

    Returns:
        Member index per class, shape (n_classes,).
    """
    n_members, _, n_classes = member_probabilities.shape
    single_losses = [log_loss(labels, member_probabilities[m]) for m in range(n_members)]
    choice = np.full(n_classes, int(np.argmin(single_losses)))
    best = min(single_losses)
    for _ in range(max_passes):
        improved = False
        for column in range(n_classes):
            for member in range(n_members):
                if member == choice[column]:
                    continue
                trial = choice.copy()
                trial[column] = member
                loss = log_loss(labels, select_per_class(member_probabilities, trial))
                if loss < best - 1e-12:
                    best, choice, improved = loss, trial, True
        if not improved:
            break
    return choice
