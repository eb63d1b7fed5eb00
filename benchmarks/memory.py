"""Memory: peak resident memory of feature extraction and of head training, at two numbers of frames.

Each measurement is a separate process (``python -m benchmarks.memory STAGE ...``) that reports its own
peak resident set size (``VmHWM``) and the size of the feature arrays it holds:

- ``features``: ``extract_features`` of the train and then the test frames (MobileNet 0.25 at
  224x224, batches of 32) into an empty cache folder, as the main job's feature stage does;
- ``head``: the cached features read back, aligned to 5 driver folds and a head trained per fold with
  ``train_head_fold``, as the main job's head mode does, with a few epochs per fold.

Run on the full-resolution frames (train + test) and on the low-resolution set, the difference of the
peaks against the difference of the feature arrays shows whether memory grows with the number of
frames beyond the features themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Result, load_average

logger = logging.getLogger(__name__)

SIZE = (224, 224)
HEAD_EPOCHS = 3
REPOSITORY = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB.

    A process started by a larger one can report the larger one's peak as ``ru_maxrss``, because Linux
    keeps it across ``fork`` and ``execve``. ``VmHWM`` in ``/proc/self/status`` is the peak of the
    process's own memory map.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


# --- The measured process ------------------------------------------------------------------------


def _catalog_tables(data_dir: Path, max_train_frames: int):
    from kaggle_sf.data.catalog import load_catalog

    catalog = load_catalog(data_dir)
    train = catalog.train
    if 0 < max_train_frames < len(train):
        train = train.sample(n=max_train_frames, random_state=0).sort_values("img").reset_index(drop=True)
    return train, catalog.test


def _measure(stage: str, data_dir: Path, cache_dir: Path, max_train_frames: int) -> dict[str, float]:
    import tensorflow as tf

    from kaggle_sf.config import BackboneConfig, HeadConfig
    from kaggle_sf.data.folds import make_folds
    from kaggle_sf.features import extract_features
    from kaggle_sf.train import class_indices, train_head_fold

    train, test = _catalog_tables(data_dir, max_train_frames)
    tf.constant(0)
    baseline = peak_rss_mb()

    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=SIZE, weights="imagenet")
    train_features = extract_features(backbone, train, cache_dir, split="train")
    test_features = extract_features(backbone, test, cache_dir, split="test")
    if stage == "head":
        folds = make_folds(train, 5, 42)
        train_x, train_y = train_features.aligned(folds["img"]), class_indices(folds["classname"])
        test_x = test_features.aligned(test["img"])
        head = HeadConfig(max_epochs=HEAD_EPOCHS, patience=HEAD_EPOCHS)
        for fold in range(5):
            validation = (folds["fold"] == fold).to_numpy()
            train_head_fold(fold, train_x[~validation], train_y[~validation], train_x[validation], train_y[validation],
                            folds.loc[validation, "img"].tolist(), test_x, test["img"].tolist(), head, seed=fold)

    return {"stage": stage, "frames": len(train) + len(test), "baseline_mb": baseline, "peak_mb": peak_rss_mb(),
            "feature_mb": (train_features.values.nbytes + test_features.values.nbytes) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description="Measure one stage's peak resident memory; prints one JSON line.")
    parser.add_argument("stage", choices=("features", "head"))
    parser.add_argument("--data-dir", type=Path, required=True, help="competition files")
    parser.add_argument("--cache-dir", type=Path, required=True, help="features cache folder")
    parser.add_argument("--max-train-frames", type=int, default=0,
                        help="use a random sample of this many training frames; 0 uses all")
    args = parser.parse_args(argv)
    print(json.dumps(_measure(args.stage, args.data_dir, args.cache_dir, args.max_train_frames)))
    return 0


# --- The benchmark -------------------------------------------------------------------------------


def _measure_in_process(stage: str, data_dir: Path, cache_dir: Path, max_train_frames: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.memory", stage, "--data-dir", str(data_dir),
               "--cache-dir", str(cache_dir), "--max-train-frames", str(max_train_frames)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    finished = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, env=environment, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the {stage} memory measurement failed: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def run_memory(data_sets: list[tuple[str, Path, int]], work_dir: Path) -> list[Result]:
    """Measure peak memory of both stages on each data set, then compare the largest with the smallest.

    Args:
        data_sets: ``(label, data_dir, max_train_frames)`` per data set, smallest first.
        work_dir: the feature caches go under ``<work_dir>/memory/<label>``, emptied first.
    """
    import shutil
    import time

    results, measured = [], {}
    for label, data_dir, max_train_frames in data_sets:
        cache_dir = Path(work_dir) / "memory" / label
        shutil.rmtree(cache_dir, ignore_errors=True)
        for stage in ("features", "head"):
            logger.info("Memory: %s on %s", stage, label)
            started = time.perf_counter()
            report = _measure_in_process(stage, data_dir, cache_dir, max_train_frames)
            measured[label, stage] = report
            settings = {"data": label, "backbone": f"mobilenet_0.25_{SIZE[0]}x{SIZE[1]}",
                        "baseline_mb": round(report["baseline_mb"], 1), "feature_mb": round(report["feature_mb"], 1),
                        "load_average_1min": load_average()}
            if stage == "head":
                settings["head_epochs_per_fold"] = HEAD_EPOCHS
            results.append(Result(name=f"memory/{stage}_peak", value=report["peak_mb"], unit="MB", ratio=None,
                                  frames=int(report["frames"]), seconds=time.perf_counter() - started,
                                  settings=settings))
    if len(data_sets) > 1:
        results.extend(_growth(measured, data_sets[0][0], data_sets[-1][0]))
    return results


def _growth(measured: dict, small: str, large: str) -> list[Result]:
    """Return, per stage, the growth of the peak from ``small`` to ``large`` over the growth of the features."""
    rows = []
    for stage in ("features", "head"):
        low, high = measured[small, stage], measured[large, stage]
        peak_growth = high["peak_mb"] - low["peak_mb"]
        feature_growth = high["feature_mb"] - low["feature_mb"]
        rows.append(Result(
            name=f"memory/{stage}_growth", value=peak_growth, unit="MB", ratio=peak_growth / feature_growth,
            frames=int(high["frames"] - low["frames"]), seconds=0.0,
            settings={"from": small, "to": large, "feature_growth_mb": round(feature_growth, 1),
                      "ratio_of": "peak growth / feature growth"}))
    return rows


if __name__ == "__main__":
    sys.exit(main())
