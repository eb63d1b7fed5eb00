"""MLflow tracking: where runs are stored, and small helpers to log configs, curves and tables.

By default the store is SQLite at ``<work_dir>/mlruns/mlflow.db`` with artifacts under
``<work_dir>/mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` overrides it (a server, PostgreSQL, ...).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\s]+@")


_configured_uris: set[str] = set()
"""URIs this process passed to ``mlflow.set_tracking_uri``, which also exports them as
``MLFLOW_TRACKING_URI`` (MLflow 3.17), so the variable alone cannot tell a user's choice from ours."""


def user_tracking_uri() -> str | None:
    """Return ``MLFLOW_TRACKING_URI`` when the user set it, None when unset or set by this process."""
    value = os.environ.get("MLFLOW_TRACKING_URI")
    return value if value and value not in _configured_uris else None


def tracking_uri(work_dir: Path) -> str:
    """Return the tracking URI for ``work_dir``: the user's ``MLFLOW_TRACKING_URI``, else its SQLite store."""
    return user_tracking_uri() or f"sqlite:///{(Path(work_dir) / 'mlruns' / 'mlflow.db').resolve()}"


def artifact_root(work_dir: Path) -> str:
    """Return the artifact location for new experiments in ``work_dir``'s store, as a file URI."""
    return (Path(work_dir) / "mlruns" / "artifacts").resolve().as_uri()


def configure_tracking(work_dir: Path) -> str:
    """Point MLflow at ``work_dir``'s store (creating ``mlruns/``) and return the tracking URI."""
    import mlflow

    uri = tracking_uri(work_dir)
    if uri.startswith("sqlite:///"):
        (Path(work_dir) / "mlruns" / "artifacts").mkdir(parents=True, exist_ok=True)
    _configured_uris.add(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str, work_dir: Path) -> str:
    """Return the id of experiment ``name``, creating it with artifacts under ``mlruns/artifacts``."""
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None if user_tracking_uri() else artifact_root(work_dir)
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between the lookup and the create.
        return mlflow.get_experiment_by_name(name).experiment_id


def hide_url_passwords(text: str) -> str:
    """Replace the password of every ``scheme://user:password@host`` URL in ``text`` by ``***``."""
    return URL_PASSWORD.sub(r"\1***@", text)


def log_params(run_id: str, params: Mapping[str, object]) -> None:
    """Log params in batches of at most 100, truncating values to MLflow's 6000-character limit.

    Passwords in URLs (such as a ``search.storage`` database URL) are logged as ``***``.
    """
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    items = [Param(str(k), hide_url_passwords(str(v))[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])


def log_history(run_id: str, history: Mapping[str, list[float]]) -> None:
    """Log per-epoch curves (``loss``, ``val_loss``, ...) with the epoch number as step."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    metrics = [Metric(f"epoch_{name}", float(value), now, step)
               for name, values in history.items() for step, value in enumerate(values, start=1)]
    client = MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def log_table(run_id: str, table: pd.DataFrame, artifact_path: str) -> None:
    """Log a DataFrame as a CSV artifact at ``artifact_path`` (e.g. ``predictions/oof.csv``)."""
    from mlflow.tracking import MlflowClient

    folder, _, name = artifact_path.rpartition("/")
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / name
        table.to_csv(local, index=False, float_format="%.8g")
        MlflowClient().log_artifact(run_id, str(local), artifact_path=folder or None)
