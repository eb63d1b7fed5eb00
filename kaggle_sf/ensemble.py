"""Ensembles of fold models: out-of-fold bookkeeping, fold averages and top-k selection, matched by id.

A *member* is one backbone's fold ensemble. Its out-of-fold (OOF) predictions cover every validated
training frame, each made by the one fold model that did not train on that frame's driver, and its test
predictions average its fold models'. Tables carry ``img``; arrays are aligned to one row order once,
by id, in :func:`make_blend_inputs`, and every later step indexes those aligned arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kaggle_sf.config import CLASSES
from kaggle_sf.metrics import log_loss
from kaggle_sf.train import FoldResult, class_indices, prediction_table


class EnsembleError(ValueError):
    """Fold results do not cover the folds they claim to, so no honest OOF prediction exists."""


def out_of_fold(results: Sequence[FoldResult], folds: pd.DataFrame) -> pd.DataFrame:
    """Stack the fold models' validation predictions into one table aligned with ``folds`` by id.

    Raises:
        EnsembleError: a validated frame has no prediction, or one frame is predicted twice.
    """
    stacked = pd.concat([r.oof for r in results], ignore_index=True)
    repeated = stacked["img"][stacked["img"].duplicated()]
    if len(repeated):
        raise EnsembleError(f"{len(repeated)} training frames have more than one out-of-fold prediction, "
                            f"e.g. {repeated.iloc[0]}; each frame must be validated by exactly one fold model")
    validated = folds.loc[folds["fold"] >= 0, "img"]
    table = stacked.set_index("img").reindex(validated).reset_index()
    missing = table["img"][table.iloc[:, 1:].isna().any(axis=1)]
    if len(missing):
        raise EnsembleError(f"{len(missing)} validated training frames have no out-of-fold prediction, "
                            f"e.g. {missing.iloc[0]}; the fold results do not match the folds table")
    return table


def fold_average(results: Sequence[FoldResult], test_ids: Sequence[str]) -> pd.DataFrame:
    """Average the fold models' test predictions, matched by id, in ``test_ids`` order."""
    stacked = np.stack([_aligned(r.test, test_ids, f"fold {r.fold} test predictions") for r in results])
    return prediction_table(list(test_ids), stacked.mean(axis=0))


def oof_log_loss(predictions: pd.DataFrame, folds: pd.DataFrame) -> float:
    """Score ``img, c0..c9`` predictions against the classes in ``folds``, joined on ``img``.

    Raises:
        EnsembleError: a validated frame of ``folds`` has no prediction.
    """
    validated = folds.loc[folds["fold"] >= 0, ["img", "classname"]]
    merged = validated.merge(predictions, on="img", how="left", validate="one_to_one")
    probabilities = merged.loc[:, list(CLASSES)].to_numpy(dtype=np.float64)
    if np.isnan(probabilities).any():
        raise EnsembleError(f"{int(np.isnan(probabilities).any(axis=1).sum())} validated training frames "
                            "have no prediction")
    return log_loss(class_indices(merged["classname"]), probabilities)


# --- Members aligned by id -----------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One backbone's fold models, as arrays aligned with :class:`BlendInputs` rows and test ids."""

    name: str
    oof: np.ndarray
    """OOF probabilities, shape (n_rows, n_classes)."""
    fold_tests: Mapping[int, np.ndarray]
    """Test probabilities of each fold model, shape (n_test, n_classes)."""

    @property
    def test(self) -> np.ndarray:
        """The fold average: mean of the fold models' test probabilities."""
        return np.mean([self.fold_tests[f] for f in sorted(self.fold_tests)], axis=0)


@dataclass(frozen=True)
class BlendInputs:
    """Everything the blend stage fits on: labels and folds of the OOF rows, and the members."""

    ids: np.ndarray
    """``img`` of each OOF row: the validated training frames in the folds table's order."""
    labels: np.ndarray
    """Class index of each OOF row."""
    fold: np.ndarray
    """Fold in which each OOF row was validated."""
    subject: np.ndarray
    """Driver of each OOF row."""
    test_ids: np.ndarray
    members: tuple[Member, ...]

    @property
    def folds(self) -> list[int]:
        """The fold numbers, sorted."""
        return sorted(int(f) for f in np.unique(self.fold))

    def oof_table(self, probabilities: np.ndarray) -> pd.DataFrame:
        """Return OOF probabilities as ``img, c0..c9``."""
        return prediction_table(self.ids, probabilities)

    def test_table(self, probabilities: np.ndarray) -> pd.DataFrame:
        """Return test probabilities as ``img, c0..c9``."""
        return prediction_table(self.test_ids, probabilities)


def _aligned(table: pd.DataFrame, ids: Sequence[str], source: str) -> np.ndarray:
    """Return the ``c0..c9`` rows of ``table`` for ``ids``, matched by ``img``, with rows summing to one."""
    indexed = table.set_index("img")
    if indexed.index.has_duplicates:
        raise EnsembleError(f"{source} list image {indexed.index[indexed.index.duplicated()][0]} more than once")
    position = indexed.index.get_indexer(list(ids))
    if (position < 0).any():
        missing = np.asarray(list(ids))[position < 0]
        raise EnsembleError(f"{source} have no row for {len(missing)} images, e.g. {missing[0]}")
    values = indexed.loc[:, list(CLASSES)].to_numpy(dtype=np.float64)[position]
    return values / values.sum(axis=1, keepdims=True)


def make_member(name: str, results: Sequence[FoldResult], folds: pd.DataFrame,
                test_ids: Sequence[str]) -> Member:
    """Align one backbone's fold results with the validated frames of ``folds`` and with ``test_ids``.

    Raises:
        EnsembleError: a fold has no result or two, or a fold model's OOF predictions are not exactly
            the frames its fold validates.
    """
    validated = folds[folds["fold"] >= 0]
    by_fold: dict[int, FoldResult] = {}
    for result in results:
        if result.fold in by_fold:
            raise EnsembleError(f"{name}: two fold models for fold {result.fold}")
        by_fold[int(result.fold)] = result
    expected = sorted(int(f) for f in validated["fold"].unique())
    if sorted(by_fold) != expected:
        raise EnsembleError(f"{name}: fold models for folds {sorted(by_fold)}, but the folds table has {expected}")

    oof = np.full((len(validated), len(CLASSES)), np.nan)
    for fold, result in by_fold.items():
        in_fold = (validated["fold"] == fold).to_numpy()
        if set(result.oof["img"]) != set(validated.loc[in_fold, "img"]):
            raise EnsembleError(f"{name}: fold {fold} model's OOF predictions are not the {int(in_fold.sum())} "
                                f"frames that fold {fold} validates")
        oof[in_fold] = _aligned(result.oof, validated.loc[in_fold, "img"], f"{name} fold {fold} OOF predictions")
    fold_tests = {fold: _aligned(result.test, test_ids, f"{name} fold {fold} test predictions")
                  for fold, result in by_fold.items()}
    return Member(name=name, oof=oof, fold_tests=fold_tests)


def make_blend_inputs(results_by_member: Mapping[str, Sequence[FoldResult]], folds: pd.DataFrame,
                      test_ids: Sequence[str]) -> BlendInputs:
    """Align every member's fold results with the validated frames of ``folds`` and with ``test_ids``."""
    if not results_by_member:
        raise EnsembleError("no fold results to blend")
    validated = folds[folds["fold"] >= 0]
    members = tuple(make_member(name, results, folds, test_ids) for name, results in results_by_member.items())
    return BlendInputs(ids=validated["img"].to_numpy(dtype=str), labels=class_indices(validated["classname"]),
                       fold=validated["fold"].to_numpy(dtype=np.int64),
                       subject=validated["subject"].to_numpy(dtype=str),
                       test_ids=np.asarray([str(i) for i in test_ids]), members=members)


# --- Top-k selection -----------------------------------------------------------------------------


def rank_members(inputs: BlendInputs, rows: np.ndarray) -> list[int]:
    """Return member positions from the lowest OOF log loss on ``rows`` (a boolean mask) to the highest."""
    losses = [log_loss(inputs.labels[rows], member.oof[rows]) for member in inputs.members]
    return [int(i) for i in np.argsort(losses, kind="stable")]


def top_k_members(inputs: BlendInputs, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Average the ``k`` whole members with the lowest OOF log loss on ``rows``.

    Returns:
        OOF probabilities, test probabilities and the chosen members' names.
    """
    chosen = rank_members(inputs, rows)[:k]
    oof = np.mean([inputs.members[i].oof for i in chosen], axis=0)
    test = np.mean([inputs.members[i].test for i in chosen], axis=0)
    return oof, test, [inputs.members[i].name for i in chosen]


def top_k_per_fold(inputs: BlendInputs, rows: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray, dict[int, list[str]]]:
    """Keep, in each fold, the ``k`` fold models with the lowest validation loss on that fold's ``rows``.

    This is hand-picking the best fold models, made scorable on OOF: a fold model predicts only its own
    validation drivers, so models compete only with the other backbones' models of the same fold. A frame
    of fold f gets the mean of fold f's chosen models, and the test prediction is the mean of all chosen
    fold models. Ranking all fold models together would compare losses on different drivers, and a fold
    with no model chosen would leave its frames without an OOF prediction.

    A fold with no row in ``rows`` (possible when a half of the drivers misses it) ranks by all of ``rows``.

    Returns:
        OOF probabilities, test probabilities and the chosen members' names per fold.
    """
    oof = np.zeros_like(inputs.members[0].oof)
    test = np.zeros_like(inputs.members[0].test)
    chosen_by_fold: dict[int, list[str]] = {}
    for fold in inputs.folds:
        in_fold = inputs.fold == fold
        ranking_rows = rows & in_fold if (rows & in_fold).any() else rows
        chosen = rank_members(inputs, ranking_rows)[:k]
        oof[in_fold] = np.mean([inputs.members[i].oof[in_fold] for i in chosen], axis=0)
        test += np.mean([inputs.members[i].fold_tests[fold] for i in chosen], axis=0)
        chosen_by_fold[fold] = [inputs.members[i].name for i in chosen]
    return oof, test / len(inputs.folds), chosen_by_fold
