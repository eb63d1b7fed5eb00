"""Shared command-line plumbing: logging set-up and turning known errors into one-line messages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("configs") / "default.yaml"
REPOSITORY_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG


def setup_logging(verbose: bool = False) -> None:
    """Log INFO (DEBUG with ``verbose``) to stderr with times, and quiet chatty libraries."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("absl", "alembic", "mlflow", "urllib3", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, the YAML file that :func:`resolve_config_path` falls back from."""
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML run configuration (default: configs/default.yaml of the current directory, "
                             "else of the toolkit's repository)")


def resolve_config_path(config: Path | None) -> Path | None:
    """Return the configuration file a command runs with, and log it.

    Without ``--config``, ``configs/default.yaml`` in the current directory is used, else the one of
    this checkout of the toolkit. Only when neither exists (an install without the repository) do the
    built-in defaults apply, with a warning, because they train a head on frozen 224x224 features
    instead of fine-tuning.
    """
    if config is None:
        config = next((path for path in (DEFAULT_CONFIG, REPOSITORY_DEFAULT_CONFIG) if path.is_file()), None)
    if config is None:
        logger.warning("No --config given and no %s found in the current directory or at %s; using the built-in "
                       "defaults (a head on frozen MobileNet-0.25 features at 224x224). Pass --config FILE to "
                       "choose the configuration.", DEFAULT_CONFIG, REPOSITORY_DEFAULT_CONFIG)
    else:
        logger.info("Configuration: %s", config)
    return config


class OutputPathError(OSError):
    """An output folder cannot be created."""


def make_output_dir(folder: Path, option: str) -> Path:
    """Create ``folder`` (and its parents) for a command's output, or raise OutputPathError naming ``option``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"cannot create the output folder {folder} ({error.strerror}); choose another "
                              f"{option}") from error
    return folder


def user_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types whose message alone tells the user what to fix."""
    from kaggle_sf.config import ConfigError
    from kaggle_sf.data.catalog import CatalogError
    from kaggle_sf.data.fetch import ArchiveError, DataDirNotEmptyError
    from kaggle_sf.data.folds import FoldsError
    from kaggle_sf.data.images import ImageDecodeError
    from kaggle_sf.kaggle_client import KaggleError
    from kaggle_sf.search.studies import SearchError
    from kaggle_sf.submission import SubmissionError
    from kaggle_sf.train import TrainingError

    errors: list[type[BaseException]] = [ConfigError, CatalogError, ArchiveError, DataDirNotEmptyError, FoldsError,
                                         ImageDecodeError, KaggleError, OutputPathError, SearchError, SubmissionError,
                                         TrainingError]
    # The backbone registry imports Keras: look for its error only when the run already loaded it.
    backbones = sys.modules.get("kaggle_sf.models.backbones")
    if backbones is not None:
        errors.append(backbones.WeightsError)
    return tuple(errors)


RESUMABLE = "Interrupted; finished work is cached and a re-run resumes from it."


def main_guard(main: Callable[[], int], interrupted: str = RESUMABLE) -> None:
    """Run ``main`` and exit with its code; known user errors print one line and exit 2.

    Ctrl-C prints ``interrupted`` and exits 130.
    """
    try:
        code = main()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        code = 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"error: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)
