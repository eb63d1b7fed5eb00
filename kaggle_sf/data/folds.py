"""Driver-grouped cross-validation folds.

Frames of one driver are near-duplicates, so a split that puts one driver on both sides reports a loss
that collapses on new drivers. Every fold here holds out whole drivers, and stratification keeps each
fold's class mix close to the whole set's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

logger = logging.getLogger(__name__)


class FoldsError(ValueError):
    """Folds cannot be built from the given drivers and settings."""


def make_folds(train: pd.DataFrame, n_splits: int = 5, seed: int = 42,
               validation_subjects: Sequence[Sequence[str]] = ()) -> pd.DataFrame:
    """Assign every training frame to the fold in which it is validated.

    Args:
        train: the catalog's train table (``img, subject, classname`` at least).
        n_splits: number of folds for stratified group k-fold; ignored when ``validation_subjects`` is set.
        seed: seed of the shuffled fold assignment.
        validation_subjects: explicit validation drivers, one list per fold. Drivers listed nowhere
            are never validated (their ``fold`` is -1) and always train.

    Returns:
        Columns ``img, subject, classname, fold``, in ``train``'s row order.

    Raises:
        FoldsError: fewer drivers than folds, or a listed driver not in the training set.
    """
    folds = train.loc[:, ["img", "subject", "classname"]].reset_index(drop=True)
    subjects = sorted(folds["subject"].unique())

    if validation_subjects:
        unknown = sorted(set().union(*map(set, validation_subjects)).difference(subjects))
        if unknown:
            raise FoldsError(f"folds.validation_subjects lists drivers {unknown} that have no training frames; "
                             f"known drivers: {', '.join(subjects)}")
        fold_of = {s: k for k, group in enumerate(validation_subjects) for s in group}
        folds["fold"] = folds["subject"].map(fold_of).fillna(-1).astype(int)
    else:
        if n_splits > len(subjects):
            raise FoldsError(f"folds.n_splits is {n_splits} but there are only {len(subjects)} drivers; "
                             f"use at most {len(subjects)} folds")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds["fold"] = -1
        for k, (_, validation) in enumerate(splitter.split(folds, folds["classname"], groups=folds["subject"])):
            folds.loc[validation, "fold"] = k

    for k, group in folds[folds["fold"] >= 0].groupby("fold"):
        logger.info("Fold %d validates on %d frames of drivers %s", k, len(group),
                    ", ".join(sorted(group["subject"].unique())))
    return folds


def fold_indices(folds: pd.DataFrame, fold: int) -> tuple[pd.Index, pd.Index]:
    """Return the row labels of ``folds`` that train and that validate in ``fold``."""
    validate = folds.index[folds["fold"] == fold]
    train = folds.index[folds["fold"] != fold]
    return train, validate


def n_folds(folds: pd.DataFrame) -> int:
    """Return the number of folds (validated groups) in a fold table."""
    return int(folds.loc[folds["fold"] >= 0, "fold"].nunique())
