"""Atomic file writes: a reader sees either the old file or the whole new one, never a partial write."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kaggle_sf.crash import crash_point

logger = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()
"""Permissions of a file that ``open`` would create: ``mkstemp`` creates its files readable by the owner only."""

TEMPORARY_PATTERN = r"\.tmp-[a-z0-9_]{8}-(?P<name>.+)"
"""Names of the temporary files that :func:`atomic_path` creates (``tempfile.mkstemp`` adds 8 characters)."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    The temporary file lives in the same folder, so the final ``os.replace`` is a rename within one file
    system and therefore atomic. Its name ends with the final name, so that libraries which look at the
    extension (pandas' compression inference, Keras' ``.keras`` and ``.weights.h5``) treat it as the
    final file; its leading ``.tmp-`` marks it as a leftover if the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary_path, FILE_MODE)
        crash_point(f"replace {path.name}")
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def remove_stale_temporaries(folder: Path, target_name: str | None = None) -> int:
    """Delete temporary files that :func:`atomic_path` left in ``folder`` when its process was killed.

    Only call this while holding the lock that every writer of these files holds (see
    ``kaggle_sf.lock``): a temporary file of a live writer would otherwise be deleted under it.

    Args:
        folder: where the temporary files are.
        target_name: delete only the temporaries of this final file name, e.g. ``fold_0.h5``;
            None deletes every temporary in the folder.

    Returns:
        The number of files deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        match = re.fullmatch(TEMPORARY_PATTERN, entry.name)
        if match is None or not entry.is_file():
            continue
        if target_name is not None and match["name"] != target_name:
            continue
        entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("Removed %d temporary files left in %s by an interrupted run", removed, folder)
    return removed
