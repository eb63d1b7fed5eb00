"""The search on its own: catalog, driver folds, cached features, then one study per backbone.

Several copies of this job, on one machine or several, given the same data, configuration and a shared
``search.storage`` URL, work on the same studies as Optuna workers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from kaggle_sf import tracking
from kaggle_sf.config import Config, flatten
from kaggle_sf.data.catalog import load_catalog
from kaggle_sf.data.folds import make_folds
from kaggle_sf.data.image_check import screen_catalog
from kaggle_sf.features import extract_features
from kaggle_sf.lock import exclusive, work_dir_lock
from kaggle_sf.search.stage import SearchResult, search_backbone
from kaggle_sf.search.trial_runs import process_tags

logger = logging.getLogger(__name__)


def run_search(config: Config, data_dir: Path, work_dir: Path, config_path: Path | None = None) -> list[SearchResult]:
    """Run the search of every configured backbone under one MLflow run and return what each found.

    Features come from (or go into) the same cache as the main job's, ``<work_dir>/cache/features``.

    Raises:
        CatalogError, BadImageError, FoldsError, WeightsError: bad input, with a message naming the fix.
        SearchError: the study storage cannot be opened.
    """
    import mlflow

    data_dir, work_dir = Path(data_dir), Path(work_dir)
    # The same frames and folds as the main job's, so that both find the same studies.
    catalog = screen_catalog(load_catalog(data_dir), config.data.on_bad_image,
                             work_dir / "cache" / "image_checks").catalog
    folds = make_folds(catalog.train, config.folds.n_splits, config.folds.seed, config.folds.validation_subjects)

    tracking.configure_tracking(work_dir)
    # MLflow 3.17 creates the tables of a new SQLite store without a lock, and workers may start together.
    with exclusive(work_dir_lock(work_dir, "mlflow-store"), "creating the MLflow store"):
        experiment = tracking.experiment_id(config.competition, work_dir)
    stem = Path(config_path).stem if config_path else "default"
    run_name = f"search-{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"

    results = []
    tags = {"stage": "search_job", **process_tags()}
    with mlflow.start_run(run_name=run_name, experiment_id=experiment, tags=tags) as parent:
        mlflow.set_tags({"data_dir": str(data_dir.resolve()), "config_file": str(config_path or "defaults")})
        tracking.log_params(parent.info.run_id, flatten(config.to_dict()))
        for backbone in config.backbones:
            train_features = extract_features(backbone, catalog.train, work_dir / "cache" / "features", split="train",
                                              batch_size=config.features.batch_size)
            results.append(search_backbone(config, backbone, catalog, folds, train_features, work_dir,
                                           parent.info.run_id, experiment))
    return results
