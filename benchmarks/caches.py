"""Caches: the main job run twice on one work folder, the second time reusing what the first cached.

Both runs are ``python -m pipelines.full_run --data-dir DIR --work-dir DIR --set train.mode=head`` with
the repository's default configuration, as separate processes started from the repository root. The
first starts from an empty work folder. The second reuses the image check, the features and the fold
models. It computes again what is not cached: the blend stage, the submission, the charts and the
class-activation maps. Runs cannot be interleaved here, so this ratio depends more than the others on the machine's
load staying steady.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Result, load_average
from kaggle_sf.data.catalog import load_catalog

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]


def _run_main_job(data_dir: Path, work_dir: Path, overrides: list[str], log_path: Path) -> float:
    """Run the main job once, writing its output to ``log_path``; return its wall-clock seconds."""
    command = [sys.executable, "-m", "pipelines.full_run", "--data-dir", str(data_dir), "--work-dir", str(work_dir)]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        finished = subprocess.run(command, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"the main job failed with exit code {finished.returncode}; its output is in {log_path}")
    return seconds


def run_caches(data_dir: Path, work_dir: Path, extra_overrides: tuple[str, ...] = ()) -> list[Result]:
    """Time a first and a second run of the main job in head mode; see the module docstring.

    Args:
        data_dir: competition files.
        work_dir: the main job's work folder is ``<work_dir>/cache-run``, emptied first; its output
            goes to ``first.log`` and ``second.log`` beside it.
        extra_overrides: further ``--set`` assignments, e.g. fewer head epochs for a quick run.
    """
    run_dir = Path(work_dir) / "cache-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    overrides = ["train.mode=head", *extra_overrides]
    catalog = load_catalog(Path(data_dir))
    n_frames = len(catalog.train) + len(catalog.test)

    logger.info("Caches: main job with %s, first run (empty work folder)", " ".join(overrides))
    first = _run_main_job(data_dir, run_dir / "work", overrides, run_dir / "first.log")
    logger.info("Caches: first run took %.0f s; second run", first)
    second = _run_main_job(data_dir, run_dir / "work", overrides, run_dir / "second.log")
    reused = (run_dir / "second.log").read_text(encoding="utf-8").count("Reusing")

    settings = {"command": "python -m pipelines.full_run --set " + " --set ".join(overrides),
                "config": "configs/default.yaml", "reused_steps_in_second_run": reused,
                "load_average_1min": load_average()}
    return [
        Result(name="caches/first_run", value=first, unit="s", ratio=None, frames=n_frames, seconds=first,
               settings=settings),
        Result(name="caches/second_run", value=second, unit="s", ratio=second / first, frames=n_frames,
               seconds=second, settings={**settings, "ratio_of": "second_run / first_run"}),
    ]
