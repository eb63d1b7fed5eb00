"""Head search on cached bottleneck features: learning rate, dropout, weight decay and batch size.

A trial trains one head per driver fold and is scored, like the main job's fold models, by the
out-of-fold log loss. After every fold it reports the log loss of the folds done so far, so the pruner
can stop a poor trial after its first folds.

Heads are trained by ``head_training.fit_head``, in seconds per trial on a CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import optuna

from kaggle_sf.config import CLASSES, HeadConfig, HeadSearchConfig
from kaggle_sf.metrics import log_loss
from kaggle_sf.search.head_training import fit_head

logger = logging.getLogger(__name__)

OBJECTIVE = "oof_log_loss"
HEAD_PARAMS = ("learning_rate", "dropout", "weight_decay", "batch_size")
"""The ``HeadConfig`` fields that the head search tunes."""
REPEAT_SEED_STRIDE = 1000
"""Seed offset between the repeats of a fold, far from the main job's ``seed + fold``."""


def suggest_head(trial: optuna.Trial, base: HeadConfig, space: HeadSearchConfig) -> HeadConfig:
    """Draw a trial's head settings from the ranges of ``space``, taking the untuned fields from ``base``."""
    return replace(
        base,
        learning_rate=trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        dropout=trial.suggest_float("dropout", *space.dropout),
        weight_decay=trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_sizes)),
    )


def head_from_params(base: HeadConfig, params: Mapping[str, Any]) -> HeadConfig:
    """Return ``base`` with the tuned fields replaced by a trial's parameters."""
    return replace(base, **{name: params[name] for name in HEAD_PARAMS if name in params})


def make_head_objective(features: np.ndarray, labels: np.ndarray, fold_of_row: np.ndarray, base: HeadConfig,
                        search: HeadSearchConfig, seed: int) -> Callable[[optuna.Trial], float]:
    """Return an objective that scores a trial's head by out-of-fold log loss over the driver folds.

    Each fold trains ``search.repeats`` heads with different seeds, and the value is the mean of the
    repeats' out-of-fold losses: the expected loss of one training run, as the main job does it. One run
    is a noisy estimate at high learning rates, where early stopping picks a lucky epoch, and the
    lowest of many noisy estimates would favour them.

    Args:
        features: bottleneck features, one row per training frame.
        labels: class index of each row.
        fold_of_row: fold in which each row is validated, or -1 for rows that always train.
        base: head settings the search does not tune (``max_epochs``, ``patience``).
        search: ranges of the tuned settings and the repeats per fold.
        seed: the first repeat of fold ``k`` is seeded with ``seed + k``, as in the main job.
    """
    folds = sorted(int(k) for k in np.unique(fold_of_row) if k >= 0)

    def objective(trial: optuna.Trial) -> float:
        head = suggest_head(trial, base, search)
        oof = np.zeros((search.repeats, len(labels), len(CLASSES)))
        done = np.zeros(len(labels), dtype=bool)

        for step, fold in enumerate(folds, start=1):
            validation = fold_of_row == fold
            for repeat in range(search.repeats):
                fitted = fit_head(features[~validation], labels[~validation], features[validation],
                                  labels[validation], head, seed + fold + REPEAT_SEED_STRIDE * repeat)
                oof[repeat, validation] = fitted.probabilities
            done |= validation
            value = float(np.mean([log_loss(labels[done], repeat[done]) for repeat in oof]))
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"loss diverged in fold {fold} at learning rate {head.learning_rate:.3g}")
            trial.report(value, step)
            if step < len(folds) and trial.should_prune():
                raise optuna.TrialPruned(f"out-of-fold log loss {value:.4f} after {step} of {len(folds)} folds")
        return value

    return objective
