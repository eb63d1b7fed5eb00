"""The blend stage: candidate recipes scored by out-of-fold log loss, and the one that holds up chosen.

A candidate is a recipe for the submission. It starts from a combination of members: one backbone's
fold average, the top-k backbones, the top-k fold models of each fold, a fitted arithmetic or geometric
blend, or per-class selection. Neighbour smoothing and then calibration may follow. Each candidate is
scored two ways:

- OOF log loss: fitted on all out-of-fold (OOF) rows and scored on them. Whatever a recipe fits
  (rankings, weights, smoothing, temperature) has seen the labels it is scored on, so this number
  flatters recipes that fit more.
- held-out log loss: the drivers are split into two halves, balanced across folds; the recipe is fitted
  on one half and scored on the other, then the halves swap, and the whole is repeated over several
  random splits. A recipe that fits nothing scores the same both ways.

The chosen recipe has the lowest held-out loss (``ensemble.select_by: held_out``) or the lowest OOF
loss (``oof``); it is then fitted on all OOF rows and applied to the test set. The selection table
shows what choosing by in-sample loss costs: on each split, the candidate that wins on the fitting half
is scored on the other half.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kaggle_sf.blend import blend, fit_blend_weights, fit_per_class_selection, select_per_class
from kaggle_sf.calibration import fit_calibration
from kaggle_sf.config import CLASSES, EnsembleConfig
from kaggle_sf.ensemble import BlendInputs, oof_log_loss, top_k_members, top_k_per_fold
from kaggle_sf.metrics import accuracy, log_loss
from kaggle_sf.smoothing import Smoothing, fit_smoothing, neighbour_indices, smooth
from kaggle_sf.train import class_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Combination:
    """Members combined by one recipe: OOF and test probabilities, and what was fitted."""

    oof: np.ndarray
    test: np.ndarray
    description: str


Combine = Callable[[BlendInputs, np.ndarray], Combination]
"""Fit a combination on the OOF rows of a boolean mask and predict every OOF row and the test set."""


@dataclass(frozen=True)
class Prediction:
    """One candidate fitted on some OOF rows: its predictions on every OOF row and on the test set."""

    step: str
    oof: np.ndarray
    test: np.ndarray
    description: str


@dataclass(frozen=True)
class FeatureSpace:
    """Neighbour lists of one bottleneck-feature space: OOF rows (searched within folds) and test rows."""

    oof_neighbours: np.ndarray
    test_neighbours: np.ndarray


@dataclass(frozen=True)
class BlendResult:
    """The blend stage's output.

    Attributes:
        candidates: one row per candidate: ``candidate, step, oof_log_loss, held_out_log_loss,
            oof_accuracy, description`` and, when test labels were given, ``test_log_loss``.
        selection: one row per split and fitting half: the candidate that wins there in-sample, its
            loss on that half and on the other half, and the best loss on the other half.
        chosen: name of the chosen candidate.
        oof: the chosen candidate's OOF predictions, ``img, c0..c9``.
        test: the chosen candidate's test predictions, ``img, c0..c9``.
    """

    candidates: pd.DataFrame
    selection: pd.DataFrame
    chosen: str
    oof: pd.DataFrame
    test: pd.DataFrame

    @property
    def chosen_row(self) -> pd.Series:
        """The chosen candidate's row of the table."""
        return self.candidates.set_index("candidate").loc[self.chosen]


# --- Combinations --------------------------------------------------------------------------------


def _fixed_member(index: int) -> Combine:
    def combine(inputs: BlendInputs, rows: np.ndarray) -> Combination:
        member = inputs.members[index]
        return Combination(member.oof, member.test, f"fold average of {len(member.fold_tests)} fold models")
    return combine


def _top_k_backbones(k: int) -> Combine:
    def combine(inputs: BlendInputs, rows: np.ndarray) -> Combination:
        oof, test, chosen = top_k_members(inputs, rows, k)
        return Combination(oof, test, "mean of " + ", ".join(chosen))
    return combine


def _top_k_per_fold(k: int) -> Combine:
    def combine(inputs: BlendInputs, rows: np.ndarray) -> Combination:
        oof, test, chosen = top_k_per_fold(inputs, rows, k)
        listed = "; ".join(f"fold {fold}: {', '.join(names)}" for fold, names in chosen.items())
        return Combination(oof, test, listed)
    return combine


def _stack(inputs: BlendInputs) -> tuple[np.ndarray, np.ndarray]:
    return (np.stack([m.oof for m in inputs.members]), np.stack([m.test for m in inputs.members]))


def _weighted_blend(kind: str) -> Combine:
    def combine(inputs: BlendInputs, rows: np.ndarray) -> Combination:
        oof, test = _stack(inputs)
        weights = fit_blend_weights(oof[:, rows], inputs.labels[rows], kind)
        listed = ", ".join(f"{m.name} {w:.3f}" for m, w in zip(inputs.members, weights))
        return Combination(blend(oof, weights, kind), blend(test, weights, kind), f"weights {listed}")
    return combine


def _per_class_selection(inputs: BlendInputs, rows: np.ndarray) -> Combination:
    oof, test = _stack(inputs)
    choice = fit_per_class_selection(oof[:, rows], inputs.labels[rows])
    listed = ", ".join(f"c{c}: {inputs.members[m].name}" for c, m in enumerate(choice))
    return Combination(select_per_class(oof, choice), select_per_class(test, choice), listed)


def combinations(inputs: BlendInputs) -> list[tuple[str, str, Combine]]:
    """List every combination of members as ``(name, step, combine)``."""
    n_members = len(inputs.members)
    listed: list[tuple[str, str, Combine]] = [
        (f"backbone/{member.name}", "fold average", _fixed_member(i)) for i, member in enumerate(inputs.members)]
    if n_members == 1:
        return listed
    listed += [(f"top{k}_backbones", "top-k backbones", _top_k_backbones(k)) for k in range(1, n_members + 1)]
    listed += [(f"top{k}_per_fold", "top-k fold models per fold", _top_k_per_fold(k)) for k in range(1, n_members)]
    listed += [(f"blend_{kind}", "blend", _weighted_blend(kind)) for kind in ("arithmetic", "geometric")]
    listed.append(("per_class_selection", "per-class selection", _per_class_selection))
    return listed


# --- Fitting every candidate on some rows --------------------------------------------------------


def _smooth(probabilities: np.ndarray, setting: Smoothing, spaces: Mapping[str, FeatureSpace],
            split: str) -> np.ndarray:
    if not setting.enabled:
        return probabilities
    space = spaces[setting.space]
    neighbours = space.oof_neighbours if split == "oof" else space.test_neighbours
    return smooth(probabilities, neighbours, setting.n_neighbours, setting.weight)


def fit_candidates(inputs: BlendInputs, rows: np.ndarray, spaces: Mapping[str, FeatureSpace],
                   config: EnsembleConfig) -> dict[str, Prediction]:
    """Fit every candidate on the OOF rows of the boolean mask ``rows`` and predict all rows and the test set.

    Each combination appears as is, ``+calibration``, and, when feature spaces are given,
    ``+smoothing`` and ``+smoothing+calibration``. Labels outside ``rows`` are never read.
    """
    labels = inputs.labels[rows]
    fitted: dict[str, Prediction] = {}
    for name, step, combine in combinations(inputs):
        combined = combine(inputs, rows)
        variants = [(name, step, combined.oof, combined.test, combined.description)]
        if spaces:
            setting = fit_smoothing(combined.oof, inputs.labels, rows,
                                    {label: space.oof_neighbours for label, space in spaces.items()},
                                    config.neighbours, config.neighbour_weights)
            variants.append((f"{name}+smoothing", "smoothing", _smooth(combined.oof, setting, spaces, "oof"),
                             _smooth(combined.test, setting, spaces, "test"),
                             f"{combined.description}; smoothing {setting.describe()}"))

        for variant_name, variant_step, oof, test, description in variants:
            fitted[variant_name] = Prediction(variant_step, oof, test, description)
            calibration = fit_calibration(oof[rows], labels, config.clip)
            fitted[f"{variant_name}+calibration"] = Prediction(
                "calibration", calibration.apply(oof), calibration.apply(test),
                f"{description}; calibration {calibration.describe()}")
    return fitted


# --- Held-out check ------------------------------------------------------------------------------


def driver_halves(inputs: BlendInputs, rng: np.random.Generator) -> np.ndarray:
    """Split the drivers into two halves, alternating through each fold's shuffled drivers.

    Returns:
        Boolean mask of the OOF rows whose driver is in the first half. Every fold with two or more
        drivers has drivers in both halves, and the halves differ in size by at most one driver.
    """
    first_half: list[str] = []
    take = bool(rng.integers(2))
    for fold in inputs.folds:
        for subject in rng.permutation(np.unique(inputs.subject[inputs.fold == fold])):
            if take:
                first_half.append(str(subject))
            take = not take
    return np.isin(inputs.subject, first_half)


def held_out_check(inputs: BlendInputs, spaces: Mapping[str, FeatureSpace], config: EnsembleConfig,
                   seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """Fit every candidate on one half of the drivers and score it on the other, over repeated splits.

    Returns:
        The mean held-out log loss of each candidate, and one row per split and fitting half naming
        the candidate that wins on that half in-sample with its loss there and on the other half.
    """
    rng = np.random.default_rng(seed)
    losses: dict[str, list[float]] = {}
    selection_rows = []
    for repeat in range(config.held_out_repeats):
        first = driver_halves(inputs, rng)
        held_out_predictions: dict[str, np.ndarray] = {}
        for half, fit_rows in (("first", first), ("second", ~first)):
            scored_rows = ~fit_rows
            fitted = fit_candidates(inputs, fit_rows, spaces, config)
            in_sample = {name: log_loss(inputs.labels[fit_rows], p.oof[fit_rows]) for name, p in fitted.items()}
            held_out = {name: log_loss(inputs.labels[scored_rows], p.oof[scored_rows]) for name, p in fitted.items()}
            for name, prediction in fitted.items():
                held_out_predictions.setdefault(name, np.zeros_like(prediction.oof))[scored_rows] = \
                    prediction.oof[scored_rows]
            winner = min(in_sample, key=in_sample.get)
            best_held_out = min(held_out, key=held_out.get)
            selection_rows.append({"repeat": repeat, "fitted_on": half,
                                   "fitted_drivers": " ".join(sorted(np.unique(inputs.subject[fit_rows]))),
                                   "in_sample_winner": winner, "winner_in_sample_log_loss": in_sample[winner],
                                   "winner_held_out_log_loss": held_out[winner], "best_held_out": best_held_out,
                                   "best_held_out_log_loss": held_out[best_held_out]})
        for name, prediction in held_out_predictions.items():
            losses.setdefault(name, []).append(log_loss(inputs.labels, prediction))
    return {name: float(np.mean(values)) for name, values in losses.items()}, pd.DataFrame(selection_rows)


# --- The stage -----------------------------------------------------------------------------------


def feature_space(oof_features: np.ndarray, oof_folds: np.ndarray, test_features: np.ndarray,
                  max_neighbours: int) -> FeatureSpace:
    """Search neighbours in one feature space: OOF rows within their validation fold, test rows together.

    Args:
        oof_features: features of the OOF rows, aligned by id with :class:`BlendInputs` rows.
        oof_folds: validation fold of each OOF row.
        test_features: features of the test frames, aligned by id with the test ids.
        max_neighbours: the largest neighbour count smoothing will try.
    """
    # NOTE: the search is brute force, O(n^2) per group; on the competition's ~80,000 test frames with
    # wide features it is slow on a CPU.
    return FeatureSpace(
        oof_neighbours=neighbour_indices(oof_features, oof_folds, max_neighbours),
        test_neighbours=neighbour_indices(test_features, np.zeros(len(test_features), dtype=np.int64),
                                          max_neighbours))


def choose_blend(inputs: BlendInputs, folds: pd.DataFrame, config: EnsembleConfig, seed: int,
                 spaces: Mapping[str, FeatureSpace] | None = None,
                 test_labels: pd.DataFrame | None = None) -> BlendResult:
    """Score every candidate recipe by OOF and held-out log loss, choose one and predict the test set.

    Args:
        inputs: the members, aligned by id.
        folds: the folds table the OOF losses are scored against, by ``img``.
        config: the ``ensemble`` section.
        seed: seed of the driver halves.
        spaces: feature spaces for neighbour smoothing by name (see :func:`feature_space`); None or
            empty leaves smoothing out, and so does ``config.smoothing: false``.
        test_labels: ``img, classname`` of the test frames, when known: adds a ``test_log_loss`` column,
            which is reported and never used to choose.
    """
    spaces = dict(spaces or {}) if config.smoothing else {}
    fitted = fit_candidates(inputs, np.ones(len(inputs.ids), dtype=bool), spaces, config)
    held_out, selection = held_out_check(inputs, spaces, config, seed)

    table = pd.DataFrame([
        {"candidate": name, "step": p.step, "oof_log_loss": oof_log_loss(inputs.oof_table(p.oof), folds),
         "held_out_log_loss": held_out[name], "oof_accuracy": accuracy(inputs.labels, p.oof),
         "description": p.description}
        for name, p in fitted.items()])
    if test_labels is not None:
        table["test_log_loss"] = [_test_log_loss(inputs.test_table(fitted[name].test), test_labels)
                                  for name in table["candidate"]]
    order = "held_out_log_loss" if config.select_by == "held_out" else "oof_log_loss"
    table = table.sort_values([order, "candidate"], kind="stable", ignore_index=True)

    chosen = str(table["candidate"].iloc[0])
    return BlendResult(candidates=table, selection=selection, chosen=chosen,
                       oof=inputs.oof_table(fitted[chosen].oof), test=inputs.test_table(fitted[chosen].test))


def _test_log_loss(predictions: pd.DataFrame, test_labels: pd.DataFrame) -> float:
    merged = test_labels.loc[:, ["img", "classname"]].merge(predictions, on="img", how="inner",
                                                            validate="one_to_one")
    return log_loss(class_indices(merged["classname"]), merged.loc[:, list(CLASSES)].to_numpy(dtype=np.float64))


def summarise(result: BlendResult) -> list[str]:
    """Return log lines: the candidate table, and the best candidate of each step with its held-out loss."""
    table = result.candidates.drop(columns="description").to_string(index=False, float_format="%.4f")
    lines = [f"Blend candidates (held-out: fitted on half of the drivers, scored on the other half):\n{table}"]
    for step, group in result.candidates.groupby("step", sort=False):
        best = group.iloc[0]
        lines.append(f"best {step}: {best['candidate']} OOF {best['oof_log_loss']:.4f}, "
                     f"held-out {best['held_out_log_loss']:.4f}")
    if len(result.selection):
        lines.append(f"Choosing by in-sample loss on half of the drivers scores "
                     f"{result.selection['winner_in_sample_log_loss'].mean():.4f} there and "
                     f"{result.selection['winner_held_out_log_loss'].mean():.4f} on the other half")
    return lines
