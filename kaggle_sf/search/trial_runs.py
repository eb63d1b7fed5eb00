"""MLflow records of a search: a child run per trial under the search run, and the study's summary artifacts."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from kaggle_sf import tracking

logger = logging.getLogger(__name__)

RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
"""MLflow run status of each final trial state. The run's tag ``optuna.state`` also names the state."""


def process_tags() -> dict[str, str]:
    """Return the tags by which the main job ends RUNNING runs of killed processes (``kaggle_sf.pid``, ``.host``)."""
    return {"kaggle_sf.pid": str(os.getpid()), "kaggle_sf.host": socket.gethostname()}


def _milliseconds(moment: datetime | None) -> int:
    return int((moment.timestamp() if moment is not None else time.time()) * 1000)


class TrialRunLogger:
    """Study callback that records each trial this process ran as an MLflow child run of the search run.

    A trial's run contains its parameters, its ``value`` (complete trials only), its intermediate values as
    the metric ``<objective>`` with the step the objective reported, and tags for the study, the trial
    number, the final state and the worker that ran it.
    """

    def __init__(self, search_run_id: str, experiment_id: str, objective: str, run_prefix: str) -> None:
        self.search_run_id = search_run_id
        self.experiment_id = experiment_id
        self.objective = objective
        self.run_prefix = run_prefix

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client = MlflowClient()
        start, end = _milliseconds(trial.datetime_start), _milliseconds(trial.datetime_complete)
        run = client.create_run(self.experiment_id, start_time=start,
                                run_name=f"{self.run_prefix}/trial{trial.number}",
                                tags={MLFLOW_PARENT_RUN_ID: self.search_run_id, "stage": "trial"})

        tags = {"optuna.study": study.study_name, "optuna.trial_number": str(trial.number),
                "optuna.state": trial.state.name, "objective": self.objective,
                "worker": str(trial.user_attrs.get("worker", ""))}
        params = [Param(name, str(value)) for name, value in trial.params.items()]
        metrics = [Metric(self.objective, float(value), end, int(step))
                   for step, value in sorted(trial.intermediate_values.items()) if math.isfinite(value)]
        if trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
            metrics.append(Metric("value", float(trial.value), end, 0))
        if trial.duration is not None:
            metrics.append(Metric("seconds", trial.duration.total_seconds(), end, 0))
        client.log_batch(run.info.run_id, metrics=metrics, params=params,
                         tags=[RunTag(name, value) for name, value in tags.items()])
        client.set_terminated(run.info.run_id, status=RUN_STATUS.get(trial.state, "FAILED"), end_time=end)


def best_trial_record(study: Study) -> dict[str, object] | None:
    """Return the best complete trial as JSON-ready data, or None while no trial has completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    return {
        "study": study.study_name,
        "number": best.number,
        "value": best.value,
        "params": best.params,
        "intermediate_values": {str(step): value for step, value in sorted(best.intermediate_values.items())},
        "worker": best.user_attrs.get("worker", ""),
        "datetime_start": best.datetime_start.isoformat() if best.datetime_start else None,
        "datetime_complete": best.datetime_complete.isoformat() if best.datetime_complete else None,
    }


def log_study_summary(run_id: str, study: Study, objective: str) -> dict[str, object] | None:
    """Log the study's trials table, best trial and plots as artifacts of the search run ``run_id``.

    Artifacts: ``search/trials.csv`` (every trial of every worker), ``search/best_trial.json``,
    ``search/optimization_history.png`` and ``search/intermediate_values.png`` (the per-step values,
    which show where trials were pruned).

    Returns:
        The best trial record, or None when no trial has completed.
    """
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tracking.log_table(run_id, study.trials_dataframe(), "search/trials.csv")
    best = best_trial_record(study)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if best is not None:
            (folder / "best_trial.json").write_text(json.dumps(best, indent=2))
        else:
            logger.warning("Study %s has no complete trial yet: no best trial to log", study.study_name)

        # Optuna marks its matplotlib plots experimental (Optuna 5.1); their output is stable enough here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plots = {"optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
                     "intermediate_values.png": optuna.visualization.matplotlib.plot_intermediate_values}
            for name, plot in plots.items():
                axes = plot(study, target_name=objective) if name.startswith("optimization") else plot(study)
                if name.startswith("intermediate") and axes.get_legend() is not None:
                    # One legend entry per trial buries the plot; trials.csv names the trials.
                    axes.get_legend().remove()
                    axes.set_ylabel(f"{objective} at step")
                axes.figure.set_size_inches(9, 5)
                axes.figure.savefig(folder / name, dpi=100, bbox_inches="tight")
                plt.close(axes.figure)
        client.log_artifacts(run_id, str(folder), artifact_path="search")
    return best
