"""Optuna studies: where they are stored, how they sample and prune, and how workers share a trial budget.

A study lives in an RDB storage. By default that is SQLite under ``<work_dir>/mlruns/optuna.db``, so a
search that is stopped resumes from its finished trials. Several worker processes, on one machine or many,
share a study by opening the same name in one PostgreSQL database. Optuna's storage hands each worker its
own trials, and the trial budget counts the finished trials of the whole study, so it applies across
workers and restarts. Running trials write a heartbeat, and a trial whose worker died is marked failed
after the grace period and queued once more with the same parameters.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kaggle_sf.config import SearchConfig
from kaggle_sf.tracking import hide_url_passwords

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10
"""Seconds between a running trial's heartbeats in the storage."""
GRACE_PERIOD_S = 60
"""Seconds without a heartbeat after which a running trial counts as abandoned (its worker died)."""
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
STORAGE_ATTEMPTS = 4
"""Tries to open a storage, because workers that start together race to create a new database's tables."""


class SearchError(RuntimeError):
    """A study cannot be opened or run: bad storage URL, missing driver, unreachable database."""


# --- Storage -------------------------------------------------------------------------------------


def default_storage_url(work_dir: Path) -> str:
    """Return the SQLite study storage of ``work_dir``: ``sqlite:///<work_dir>/mlruns/optuna.db``."""
    return f"sqlite:///{(Path(work_dir) / 'mlruns' / 'optuna.db').resolve()}"


def redacted_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and MLflow params."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating its tables if needed) the RDB storage at ``url``, with heartbeats for running trials.

    Raises:
        SearchError: the URL is malformed, its database driver is not installed, or the database cannot
            be reached after a few tries.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Wait for a lock held by another process instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}

    redacted = redacted_url(url)
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except ImportError as error:
            raise SearchError(f"the database driver for study storage {redacted} is not installed "
                              f"({hide_url_passwords(str(error))}); "
                              "for PostgreSQL install psycopg2-binary, e.g. pip install -e '.[postgres]'") from error
        except (ArgumentError, ValueError) as error:
            raise SearchError(f"study storage URL {redacted} is invalid ({hide_url_passwords(str(error))}); "
                              "expected e.g. "
                              "sqlite:///path/optuna.db or postgresql+psycopg2://user:password@host:5432/db"
                              ) from error
        except SQLAlchemyError as error:
            if attempt == STORAGE_ATTEMPTS:
                raise SearchError(f"could not open study storage {redacted} after {attempt} tries: "
                                  f"{hide_url_passwords(str(error))}. "
                                  "Check that the database server is running and the URL is right") from error
            logger.warning("Opening study storage %s failed (%s); retrying", redacted, type(error).__name__)
            time.sleep(attempt)
    raise AssertionError("unreachable")


# --- Sampling and pruning ------------------------------------------------------------------------


class TrialSeededSampler(BaseSampler):
    """TPE whose random draws for a trial are seeded by ``seed + trial number``.

    One seeded TPE sampler per process would repeat its first draws in every worker and after every
    restart. Trial numbers are unique within a study, so seeding by them keeps a single-process search
    reproducible while workers and resumed searches draw new points.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._current = self._tpe(seed)

    def _tpe(self, seed: int) -> TPESampler:
        return TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, multivariate=True,
                          constant_liar=True)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._current = self._tpe(self.seed + trial.number)
        self._current.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._current.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._current.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._current.after_trial(study, trial, state, values)


def make_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """Return the pruner named by ``search.pruner``."""
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=search.pruner_startup_trials, n_warmup_steps=0)


def open_study(storage_url: str, study_name: str, search: SearchConfig,
               pruner: optuna.pruners.BasePruner | None = None) -> Study:
    """Create the study ``study_name`` in the storage, or load it when it exists (a restart or another worker).

    Args:
        storage_url: an SQLAlchemy URL; see ``default_storage_url``.
        study_name: the same name in every worker that should share the study.
        search: sampler seed and startup trials, and the pruner unless ``pruner`` is given.
        pruner: replaces the configured pruner.
    """
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                load_if_exists=True,
                                sampler=TrialSeededSampler(search.seed, search.n_startup_trials),
                                pruner=pruner or make_pruner(search))
    if study.direction != StudyDirection.MINIMIZE:
        raise SearchError(f"study {study_name} in {redacted_url(storage_url)} maximises its objective; "
                          "choose another search.study_name")
    return study


# --- Running -------------------------------------------------------------------------------------


def finished_trials(study: Study) -> list[FrozenTrial]:
    """Return the study's complete and pruned trials, from every worker and every earlier run."""
    return study.get_trials(deepcopy=False, states=FINISHED_STATES)


def worker_name() -> str:
    """Return ``<host>:<pid>``, the user attribute that records which process ran a trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class StudyProgress:
    """Trials run by one call to ``run_study``, and the size of the study afterwards."""

    trial_numbers: tuple[int, ...]
    """Numbers of the trials this process ran, in order."""
    seconds: float
    n_finished: int
    """Finished trials in the whole study afterwards."""

    @property
    def trials_per_minute(self) -> float:
        return 60 * len(self.trial_numbers) / self.seconds if self.seconds > 0 else 0.0


def run_study(study: Study, objective: Callable[[optuna.Trial], float], n_trials: int, timeout_s: float,
              callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = ()) -> StudyProgress:
    """Run trials until the study contains ``n_trials`` finished ones or ``timeout_s`` seconds have passed.

    Trials that other workers or earlier runs finished count towards ``n_trials``, so a resumed search
    runs only the rest. With several workers the study may end a trial or two over the budget, because
    each worker checks the count when its own trial ends.

    Args:
        study: from ``open_study``.
        objective: returns the value to minimise; may raise ``optuna.TrialPruned``.
        n_trials: finished trials the study should hold.
        timeout_s: wall-clock limit of this call; a running trial is finished, not stopped.
        callbacks: called with each trial this process finished, pruned or failed.
    """
    worker = worker_name()
    callbacks = list(callbacks)
    numbers: list[int] = []
    notified: set[int] = set()

    def objective_of_worker(trial: optuna.Trial) -> float:
        numbers.append(trial.number)
        trial.set_user_attr("worker", worker)
        return objective(trial)

    def notify(study: Study, trial: FrozenTrial) -> None:
        notified.add(trial.number)
        for callback in callbacks:
            callback(study, trial)

    remaining = n_trials - len(finished_trials(study))
    started = time.monotonic()
    if remaining <= 0:
        logger.info("Study %s already contains %d finished trials (budget %d); running none",
                    study.study_name, n_trials - remaining, n_trials)
    else:
        budget = optuna.study.MaxTrialsCallback(n_trials, states=FINISHED_STATES)
        try:
            study.optimize(objective_of_worker, n_trials=remaining, timeout=timeout_s,
                           callbacks=[notify, budget], gc_after_trial=True)
        except BaseException:
            # Optuna records the trial that raised as failed but calls no callback for it.
            if numbers and numbers[-1] not in notified:
                for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                    if trial.number == numbers[-1]:
                        notify(study, trial)
            raise
    return StudyProgress(trial_numbers=tuple(numbers), seconds=time.monotonic() - started,
                         n_finished=len(finished_trials(study)))
