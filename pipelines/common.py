"""Shared command-line plumbing: logging set-up and turning known errors into one-line messages."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def setup_logging(verbose: bool = False) -> None:
    """Log INFO (DEBUG with ``verbose``) to stderr with times, and quiet chatty libraries."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("absl", "alembic", "mlflow", "urllib3", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


def user_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types whose message alone tells the user what to fix."""
    from kaggle_sf.config import ConfigError
    from kaggle_sf.data.catalog import CatalogError
    from kaggle_sf.data.fetch import ArchiveError, DataDirNotEmptyError
    from kaggle_sf.data.folds import FoldsError
    from kaggle_sf.kaggle_client import KaggleError
    from kaggle_sf.search.studies import SearchError
    from kaggle_sf.submission import SubmissionError

    errors: list[type[BaseException]] = [ConfigError, CatalogError, ArchiveError, DataDirNotEmptyError, FoldsError,
                                         KaggleError, SearchError, SubmissionError]
    # The backbone registry imports Keras: look for its error only when the run already loaded it.
    backbones = sys.modules.get("kaggle_sf.models.backbones")
    if backbones is not None:
        errors.append(backbones.WeightsError)
    return tuple(errors)


def main_guard(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code; known user errors print one line and exit 2."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("Interrupted; finished work is cached and a re-run resumes from it.", file=sys.stderr)
        code = 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"error: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)
