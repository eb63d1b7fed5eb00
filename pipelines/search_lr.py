"""Run the Optuna search alone: head settings on cached features, or the fine-tuning learning rate.

    python -m pipelines.search_lr [--config FILE] [--data-dir DIR] [--work-dir DIR] [--storage URL]
                                  [--study-name PREFIX] [--n-trials N] [--timeout SECONDS] [--set key=value ...]

Start the same command on several machines with one PostgreSQL ``--storage`` URL to run them as workers
of the same studies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.common import add_config_argument, main_guard, resolve_config_path, setup_logging

if TYPE_CHECKING:
    from kaggle_sf.config import Config
    from kaggle_sf.search.stage import SearchResult


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.search_lr", description=__doc__.splitlines()[0])
    add_config_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="competition files: zip, imgs.zip or extracted folders (default: data/)")
    parser.add_argument("--work-dir", type=Path, default=Path("."),
                        help="where mlruns/ (with the default study storage optuna.db) and cache/ go "
                             "(default: current directory)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage URL shared by workers, e.g. "
                             "postgresql+psycopg2://user:password@host:5432/optuna "
                             "(default: search.storage, else sqlite:///WORK_DIR/mlruns/optuna.db)")
    parser.add_argument("--study-name", default=None, metavar="PREFIX",
                        help="prefix of the study names (default: search.study_name); each backbone's "
                             "study adds the search kind, the backbone and a digest of the data")
    parser.add_argument("--n-trials", type=int, default=None, metavar="N",
                        help="finished trials each study should hold, over all workers and restarts "
                             "(default: search.n_trials)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="wall-clock limit of this process's search per backbone, in seconds "
                             "(default: search.timeout_s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.mode=finetune (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def with_search_options(config: Config, args: argparse.Namespace) -> Config:
    """Return ``config`` with the search options that were given on the command line."""
    from dataclasses import replace

    options = {"storage": args.storage, "study_name": args.study_name, "n_trials": args.n_trials,
               "timeout_s": args.timeout}
    changes = {name: value for name, value in options.items() if value is not None}
    return replace(config, search=replace(config.search, **changes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf.config import load_config

    config_path = resolve_config_path(args.config)
    config = with_search_options(load_config(config_path, args.overrides), args)

    from kaggle_sf.search.job import run_search

    for result in run_search(config, args.data_dir, args.work_dir, config_path):
        progress = result.progress
        print(f"{result.study_name}: {progress.n_finished} finished trials, {len(progress.trial_numbers)} run here "
              f"({progress.trials_per_minute:.1f} per minute)")
        if result.best_value is None:
            print("  no trial has completed yet; run again to continue the study")
            continue
        print(f"  best {result.objective} {result.best_value:.4f} (trial {result.best_trial})")
        print("  to use it: " + " ".join(f"--set {key}={value}" for key, value in config_settings(result).items()))
    return 0


def config_settings(result: SearchResult) -> dict[str, str]:
    """Return the config keys and values that carry a search result into a run."""
    if result.kind == "head":
        head = result.config.train.head
        return {f"train.head.{name}": f"{getattr(head, name):.6g}" if isinstance(getattr(head, name), float)
                else str(getattr(head, name)) for name in result.best_params}
    phases = result.config.train.finetune.phases
    return {f"train.finetune.phases.{index}.learning_rate": f"{phase.learning_rate:.6g}"
            for index, phase in enumerate(phases) if phase.train_backbone}


if __name__ == "__main__":
    main_guard(main)
