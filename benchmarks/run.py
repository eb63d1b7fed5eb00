"""Run the benchmarks and print one JSON line per result.

    python -m benchmarks.run --data-dir DIR [--lowres-dir DIR] [--work-dir DIR] [--quick] [--only NAME ...]
                             [--output FILE]

Each line contains ``name, value, unit, ratio, frames, seconds, settings``; progress goes to stderr. The
first line describes the machine. ``--quick`` runs smaller samples and fewer rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import Result, machine_result  # noqa: E402
from benchmarks.gpu import NoGpuError  # noqa: E402

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Scale:
    """How much work each benchmark does: the full measurement or the ``--quick`` one."""

    pipeline_frames: int
    pipeline_rounds: int
    feature_frames: int
    feature_rounds: int
    finetune_steps: int
    finetune_rounds: int
    memory_lowres_train_frames: int
    """Cap on the low-resolution training frames of the memory benchmark; 0 takes all."""
    search_trials: int
    head_fit_epochs: int
    head_fit_rounds: int
    cache_run_overrides: tuple[str, ...]
    resize_quality_seeds: int
    gpu_steps: int
    gpu_rounds: int


FULL = Scale(pipeline_frames=1152, pipeline_rounds=4, feature_frames=1171, feature_rounds=2, finetune_steps=12,
             finetune_rounds=3, memory_lowres_train_frames=0, search_trials=10, head_fit_epochs=10,
             head_fit_rounds=2, cache_run_overrides=(), resize_quality_seeds=4, gpu_steps=20, gpu_rounds=3)
QUICK = Scale(pipeline_frames=192, pipeline_rounds=3, feature_frames=256, feature_rounds=2, finetune_steps=4,
              finetune_rounds=2, memory_lowres_train_frames=3000, search_trials=4, head_fit_epochs=5,
              head_fit_rounds=1, cache_run_overrides=("train.head.max_epochs=20", "explain.enabled=false"),
              resize_quality_seeds=1, gpu_steps=5, gpu_rounds=2)

DEFAULT_BENCHMARKS = ("input_pipeline", "resize_quality", "features", "finetune", "caches", "memory", "search")
BENCHMARKS = (*DEFAULT_BENCHMARKS, "gpu")
"""Every benchmark; ``gpu`` needs a GPU and runs only when named with ``--only``."""


def _benchmark(name: str, args: argparse.Namespace, scale: Scale) -> Callable[[], list[Result]]:
    """Return the function that runs benchmark ``name`` with the command line's folders and scale."""
    if name == "input_pipeline":
        from benchmarks.input_pipeline import run_input_pipeline

        return lambda: run_input_pipeline(args.data_dir, [(224, 224), (299, 299)], scale.pipeline_frames,
                                          scale.pipeline_rounds)
    if name == "resize_quality":
        from benchmarks.resize_quality import run_resize_quality

        return lambda: run_resize_quality(args.data_dir, scale.resize_quality_seeds)
    if name == "features":
        from benchmarks.features import run_features

        return lambda: run_features(args.data_dir, args.work_dir, scale.feature_frames, scale.feature_rounds)
    if name == "finetune":
        from benchmarks.finetune import run_finetune

        return lambda: run_finetune(args.data_dir, scale.finetune_steps, scale.finetune_rounds)
    if name == "caches":
        from benchmarks.caches import run_caches

        return lambda: run_caches(args.data_dir, args.work_dir, scale.cache_run_overrides)
    if name == "memory":
        from benchmarks.memory import run_memory

        data_sets = [("full-resolution", args.data_dir, 0)]
        if args.lowres_dir is not None:
            data_sets.append(("low-resolution", args.lowres_dir, scale.memory_lowres_train_frames))
        return lambda: run_memory(data_sets, args.work_dir)
    if name == "search":
        from benchmarks.search import run_search

        return lambda: run_search(args.data_dir, args.work_dir, scale.search_trials, scale.head_fit_epochs,
                                  scale.head_fit_rounds)
    if name == "gpu":
        from benchmarks.gpu import run_gpu

        return lambda: run_gpu(args.data_dir, scale.gpu_steps, scale.gpu_rounds)
    raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="competition files with full-resolution (640x480) frames (default: data/)")
    parser.add_argument("--lowres-dir", type=Path, default=None,
                        help="competition files with every frame at low resolution, for the memory benchmark's "
                             "large run; without it the memory benchmark measures the --data-dir frames only")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for caches, MLflow stores and runs of the main job (default: a new "
                             "temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smaller samples and fewer rounds")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(DEFAULT_BENCHMARKS), metavar="NAME",
                        help=f"run these benchmarks only: {', '.join(BENCHMARKS)} (default: all but gpu)")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON lines to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for name in ("absl", "alembic", "mlflow", "urllib3", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="kaggle_sf-benchmarks-"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    scale = QUICK if args.quick else FULL

    def emit(result: Result) -> None:
        line = result.to_json()
        print(line, flush=True)
        if args.output is not None:
            with args.output.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    emit(machine_result())
    for name in args.only:
        started = time.monotonic()
        logger.info("Benchmark %s (%s)", name, "quick" if args.quick else "full")
        try:
            results = _benchmark(name, args, scale)()
        except NoGpuError as error:
            logger.error("Benchmark %s: %s", name, error)
            return 2
        for result in results:
            emit(result)
        logger.info("Benchmark %s finished in %.0f s", name, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    from pipelines.common import main_guard

    main_guard(main)
