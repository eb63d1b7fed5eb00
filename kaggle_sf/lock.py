"""Inter-process locks, so that concurrent jobs on one work directory share its caches without corrupting them.

A lock is an exclusive ``flock`` on a ``.lock`` file, taken through the ``filelock`` package. The kernel
releases a ``flock`` when its holder exits, even on SIGKILL, so a killed job never leaves a stale lock.
While it holds the lock, the holder keeps ``<name>.lock.owner`` beside the lock file (JSON: pid, host,
purpose, start time), and a process that has to wait reads it to log whom it is waiting for.

Locks guard a check-then-compute step: the first job computes a cache entry while a second job with
the same key waits, then finds the finished entry and reuses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock

from kaggle_sf.atomic import write_text_atomic

logger = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"
WAIT_LOG_INTERVAL_S = 60.0
"""While waiting, the waiting line is logged again this often (seconds), and whenever the holder changes."""
POLL_INTERVAL_S = 0.5
"""A waiting process reads the owner file this often (seconds), to notice a new holder."""


@dataclass(frozen=True)
class LockOwner:
    """The process that holds a lock, as it recorded itself in the owner file."""

    pid: int
    host: str
    purpose: str
    since: float
    """Unix time at which the lock was acquired."""

    def describe(self) -> str:
        """Return e.g. ``pid 4242 on node1 (extracting features) since 20:31:05``."""
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} ({self.purpose}) since {since}"


def work_dir_lock(work_dir: Path, name: str) -> Path:
    """Return the lock file ``<work_dir>/cache/locks/<name>.lock``, for resources that have no file of their own."""
    return Path(work_dir) / "cache" / "locks" / f"{name}.lock"


def owner_path(lock_path: Path) -> Path:
    """Return the owner file of a lock file: ``<lock file>.owner``."""
    lock_path = Path(lock_path)
    return lock_path.with_name(lock_path.name + OWNER_SUFFIX)


def process_is_alive(pid: int) -> bool:
    """Return whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return True


def read_owner(lock_path: Path) -> LockOwner | None:
    """Return the recorded holder of ``lock_path``, or None when no live holder is recorded.

    An owner file left by a killed holder on this host is ignored: its pid no longer runs.
    """
    try:
        record = json.loads(owner_path(lock_path).read_text(encoding="utf-8"))
        owner = LockOwner(pid=int(record["pid"]), host=str(record["host"]), purpose=str(record["purpose"]),
                          since=float(record["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.host == socket.gethostname() and not process_is_alive(owner.pid):
        return None
    return owner


def _wait_for(lock: filelock.BaseFileLock, lock_path: Path, log_interval_s: float) -> None:
    """Acquire ``lock``, logging whom it waits for at the start, on each new holder and every interval."""
    waiting_since = time.monotonic()
    logged_owner: LockOwner | None = None
    logged_at: float | None = None
    while True:
        owner = read_owner(lock_path)
        now = time.monotonic()
        new_holder = owner is not None and owner != logged_owner
        if logged_at is None or new_holder or now - logged_at >= log_interval_s:
            logger.info("Waiting for lock %s, held by %s", lock_path, owner.describe() if owner else "another process")
            logged_owner, logged_at = owner, now
        try:
            lock.acquire(timeout=POLL_INTERVAL_S)
        except filelock.Timeout:
            continue
        logger.info("Acquired lock %s after waiting %.1f s", lock_path, time.monotonic() - waiting_since)
        return


@contextlib.contextmanager
def exclusive(lock_path: Path, purpose: str, *, log_interval_s: float = WAIT_LOG_INTERVAL_S) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``lock_path`` while the block runs.

    When another process holds the lock, log the lock file and its holder's pid, then wait for it. The
    line is repeated when another process takes the lock first, and every ``log_interval_s`` seconds.
    Locks are not re-entrant: taking a lock that the same process already holds waits forever, so
    callers never nest two locks on one path.

    Args:
        lock_path: the lock file, created when missing (with its folder). It stays after release.
        purpose: what the holder does, for the waiting processes' log, e.g. ``extracting features``.
        log_interval_s: seconds between repeated waiting lines.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path))

    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        _wait_for(lock, lock_path, log_interval_s)

    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
        write_text_atomic(owner_path(lock_path), json.dumps(record))
        yield
    finally:
        # The owner file goes before the lock, so that a waiting process does not read it after the release.
        # A killed holder's owner file stays behind, and read_owner ignores it.
        owner_path(lock_path).unlink(missing_ok=True)
        lock.release()
