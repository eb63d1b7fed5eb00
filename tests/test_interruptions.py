"""Interrupted runs: a job killed at any stage re-runs to the same submission, reusing finished work.

The end-to-end test kills the main job with SIGKILL at one crash point after another (see
``kaggle_sf.crash``). After each kill it checks that no partial file sits at a final name. At the end
it compares the last, uninterrupted re-run with a run that was never killed.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kaggle_sf.atomic import atomic_path, remove_stale_temporaries
from kaggle_sf.config import load_config
from kaggle_sf.data.catalog import load_catalog
from kaggle_sf.run import _load_fold_result
from tests.main_job import (
    COMPETITION_ZIP,
    assert_same_submission,
    keras_home,
    reference_submission,
    run_main_job,
    stored_runs,
    synthetic_competition,
    temporary_files,
    zip_competition,
)

# --- Atomic writes ---------------------------------------------------------------------------------


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_stale_temporaries_of_one_file_are_removed(tmp_path: Path):
    names = [".tmp-abcd1234-fold_0.h5", ".tmp-efgh5678-fold_0.h5", ".tmp-ijkl9012-fold_1.h5", "fold_0.h5",
             ".hidden"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_stale_temporaries(tmp_path, "fold_0.h5") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".tmp-ijkl9012-fold_1.h5", "fold_0.h5"]
    assert remove_stale_temporaries(tmp_path) == 1


# --- Resuming single stages ------------------------------------------------------------------------


def test_partly_extracted_competition_zip_is_extracted_again(tiny_competition: Path, tmp_path: Path):
    # A run killed while moving the competition zip's entries into place left imgs.zip but no tables.
    packed = zip_competition(tiny_competition, tmp_path / "packed")
    with zipfile.ZipFile(packed / COMPETITION_ZIP) as archive:
        archive.extract("imgs.zip", packed)
    catalog = load_catalog(packed)
    assert len(catalog.train) == 80
    assert len(catalog.test) == 6


def test_fold_model_with_missing_file_is_trained_again(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "fold_0"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"fold": 0, "val_log_loss": 1.0}))
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.run"):
        assert _load_fold_result(folder) is None
    assert f"The fold model in {folder} cannot be read" in caplog.text


def test_damaged_features_file_is_extracted_again(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from kaggle_sf.features import cache_key, cache_path, extract_features

    synthetic = synthetic_competition(tmp_path)
    images = load_catalog(synthetic).test.head(4)
    backbone = load_config(None, ["backbones.0.weights=none", "backbones.0.input_size=[32, 32]"]).backbones[0]
    cache = tmp_path / "cache"
    path = cache_path(cache, backbone, "test", cache_key(backbone, images))
    cache.mkdir()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    stale = cache / f".tmp-zzzz9999-{path.name}"
    stale.write_bytes(b"partial")

    with caplog.at_level(logging.INFO, logger="kaggle_sf"):
        features = extract_features(backbone, images, cache, split="test", batch_size=2)
    assert features.values.shape == (4, 256)
    assert list(features.ids) == images["img"].tolist()
    assert f"Features cache file {path} cannot be read" in caplog.text
    assert not stale.exists()


# --- The main job, killed at every stage -----------------------------------------------------------


CRASHES = (
    f"extracted {COMPETITION_ZIP}",
    "features batch",
    "replace metrics.json",
    "fold 1 saved",
    "blend",
    "replace crash.csv.gz",
)


def _fold_folders(work_dir: Path) -> list[Path]:
    return sorted(p for p in (work_dir / "cache" / "models").glob("*/*/fold_*") if p.is_dir())


def _check_left_behind(crash_point: str, data_dir: Path, work_dir: Path) -> None:
    """Check what a run killed at ``crash_point`` left: finished work whole, the rest absent or temporary."""
    features = sorted(p.name for p in (work_dir / "cache" / "features").glob("*.h5") if not p.name.startswith("."))
    submissions = work_dir / "submissions"
    if crash_point.startswith("extracted"):
        assert (data_dir / "imgs.zip").is_file()
        assert not (data_dir / "train").exists()
        assert not (work_dir / "cache" / "features").exists()
    elif crash_point == "features batch":
        assert features == []
        assert len(temporary_files(work_dir / "cache" / "features")) == 1
    elif crash_point == "replace metrics.json":
        assert len(features) == 2
        assert temporary_files(work_dir / "cache" / "features") == []
        [fold_0] = _fold_folders(work_dir)
        saved = {p.name for p in fold_0.iterdir() if not p.name.startswith(".")}
        assert {"history.json", "oof.csv", "test.csv"} <= saved
        assert "metrics.json" not in saved
        assert [name.rsplit("-", 1)[1] for name in temporary_files(fold_0)] == ["metrics.json"]
    elif crash_point == "fold 1 saved":
        assert [p.name for p in _fold_folders(work_dir)] == ["fold_0", "fold_1"]
        assert all((p / "metrics.json").is_file() for p in _fold_folders(work_dir))
        assert temporary_files(work_dir / "cache" / "models") == []
    elif crash_point == "blend":
        assert len(_fold_folders(work_dir)) == 3
        assert not submissions.exists()
    else:
        assert (submissions / "crash.csv").is_file()
        assert not (submissions / "crash.csv.gz").exists()
        assert len(temporary_files(submissions)) == 1


def test_killed_main_job_resumes_to_the_same_submission(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    home = keras_home(base)
    reference = reference_submission(base)
    data_dir = zip_competition(synthetic_competition(base), tmp_path_factory.mktemp("zipped") / "data")
    work_dir = tmp_path_factory.mktemp("interrupted_work")

    for crash_point in CRASHES:
        killed = run_main_job(data_dir, work_dir, home, crash_at=crash_point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert f"Crash point '{crash_point}' reached" in killed.stderr
        _check_left_behind(crash_point, data_dir, work_dir)

    finished = run_main_job(data_dir, work_dir, home)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Reusing cached mobilenet_0.25_64x64 features of 80 train images" in finished.stderr
    for fold in range(3):
        assert f"Reusing finished mobilenet_0.25_64x64 fold {fold} model" in finished.stderr
    assert_same_submission(work_dir / "submissions" / "crash.csv", reference)
    gzipped = pd.read_csv(work_dir / "submissions" / "crash.csv.gz")
    assert gzipped.equals(pd.read_csv(work_dir / "submissions" / "crash.csv"))
    assert temporary_files(work_dir / "cache") == []
    assert temporary_files(work_dir / "submissions") == []

    # The runs of the five jobs killed after MLflow started are ended as KILLED; none is left RUNNING.
    runs = stored_runs(work_dir, "state-farm-distracted-driver-detection")
    parents = sorted(run.info.status for run in runs if "mlflow.parentRunId" not in run.data.tags)
    assert parents == ["FINISHED"] + ["KILLED"] * 5
    assert "RUNNING" not in {run.info.status for run in runs}
    shutil.rmtree(work_dir)


def test_atomic_write_gets_the_umask_mode(tmp_path: Path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "out.csv") as temporary:
        temporary.write_text("a\n")
    # The mode open() would give, not mkstemp's 0600.
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_fold_result_reloads_exactly(tmp_path: Path):
    import numpy as np

    from kaggle_sf.train import FoldResult, prediction_table

    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=5).astype(np.float32)
    result = FoldResult(fold=1, oof=prediction_table([f"v{i}" for i in range(5)], probabilities),
                        test=prediction_table([f"t{i}" for i in range(5)], probabilities[::-1]),
                        metrics={"val_log_loss": 1.5})
    result.save(tmp_path / "fold")
    loaded = FoldResult.load(tmp_path / "fold")
    assert loaded.oof.equals(result.oof)
    assert loaded.test.equals(result.test)


def test_diverged_fold_raises_and_leaves_no_model(tmp_path: Path):
    import numpy as np

    from kaggle_sf.config import BackboneConfig
    from kaggle_sf.run import _check_finite
    from kaggle_sf.train import FoldResult, TrainingError, prediction_table

    folder = tmp_path / "fold_0"
    folder.mkdir()
    (folder / "checkpoint.keras").write_bytes(b"weights")
    probabilities = np.full((3, 10), np.nan)
    result = FoldResult(fold=0, oof=prediction_table(["a", "b", "c"], probabilities),
                        test=prediction_table(["t"], np.full((1, 10), 0.1)), metrics={"val_log_loss": float("nan")})
    with pytest.raises(TrainingError, match=r"training mobilenet_0\.25_224x224 fold 0 diverged: .*validation log "
                                            r"loss nan\); lower train\.head\.learning_rate"):
        _check_finite(result, BackboneConfig(), "head", folder)
    assert not folder.exists()


def test_uncreatable_output_folder_is_named(tmp_path: Path):
    from pipelines.common import OutputPathError, make_output_dir

    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(OutputPathError, match=r"cannot create the output folder .*file\.png/sub .* choose another "
                                              r"--output-dir"):
        make_output_dir(tmp_path / "file.png" / "sub", "--output-dir")
