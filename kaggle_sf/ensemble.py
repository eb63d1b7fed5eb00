"""Ensembles of fold models: out-of-fold bookkeeping and averages, always matched by image id."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kaggle_sf.train import FoldResult


def out_of_fold(results: list[FoldResult], folds: pd.DataFrame) -> pd.DataFrame:
    """Stack the fold models' validation predictions into one table aligned with ``folds`` by id."""
    stacked = pd.concat([r.oof for r in results], ignore_index=True).set_index("img")
    validated = folds[folds["fold"] >= 0]
    return stacked.reindex(validated["img"]).reset_index()


def fold_average(results: list[FoldResult], test_ids: list[str]) -> pd.DataFrame:
    """Average the fold models' test predictions, matched by id, in ``test_ids`` order."""
    stacked = np.stack([r.test.set_index("img").reindex(test_ids).to_numpy() for r in results])
    table = pd.DataFrame(stacked.mean(axis=0), columns=results[0].test.columns[1:])
    table.insert(0, "img", test_ids)
    return table
