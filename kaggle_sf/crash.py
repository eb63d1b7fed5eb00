"""Crash points: named places where the process kills itself, to test that an interrupted run resumes.

When the environment variable ``KAGGLE_SF_CRASH_AT`` equals a crash point's name, the process sends
itself SIGKILL the first time it reaches that point. No ``finally`` block, exit handler or buffered
write runs, as when the kernel's out-of-memory killer or a lost machine ends a job. With the variable
unset, a crash point costs one environment lookup.

The crash points, in the order a run reaches them:

- ``extracted <archive name>``: an archive of the data directory has just been extracted.
- ``features batch``: the first batch of features is written to a temporary cache file.
- ``replace <file name>``: a file written by :func:`kaggle_sf.atomic.atomic_path` is complete but
  not yet renamed into place (``replace metrics.json`` stops in the middle of saving a fold model).
- ``fold <k> saved``: fold model ``k`` of the first backbone is saved.
- ``blend``: every fold model is trained and the submission is not yet written.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

CRASH_AT_ENV = "KAGGLE_SF_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when ``KAGGLE_SF_CRASH_AT`` equals ``name``; otherwise do nothing."""
    if os.environ.get(CRASH_AT_ENV) != name:
        return
    logger.warning("Crash point %r reached (%s is set): killing process %d with SIGKILL", name, CRASH_AT_ENV,
                   os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
