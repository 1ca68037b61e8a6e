"""One writer at a time per gallery folder: an exclusive ``fcntl.flock`` on ``G/.facemask-gallery.lock``.

Every change of a gallery (build with replace, add, remove) holds the lock for its whole read-modify-write, so
that concurrent writers are serialised and each one's enrolments are kept. The lock is released by the kernel when
its holder exits, also on ``kill -9``: a lock that can be taken proves that no other writer is alive, which is
what makes removing a dead writer's leftovers safe. The wait is bounded (:data:`TIMEOUT_ENV`, default
:data:`DEFAULT_TIMEOUT_S`); past it :class:`GalleryLockError` names the holder. Reentrant within a process.
Readers never take the lock.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from ...errors import ConfigurationError, GalleryLockError
from ...support.file_locks import LockFileReplaced, try_lock, write_holder

LOCK_FILE = ".facemask-gallery.lock"
TIMEOUT_ENV = "FACEMASK_GALLERY_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
_POLL_S = (0.01, 0.25)  # first and longest pause between attempts

_guard = threading.Lock()
_threads: dict[str, threading.RLock] = {}  # folder -> lock of this process's threads
_depth: dict[str, int] = {}
_files: dict[str, int] = {}  # folder -> descriptor holding the flock


def lock_timeout() -> float:
    """Seconds a writer waits for the lock: ``$FACEMASK_GALLERY_LOCK_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= threading.TIMEOUT_MAX:  # also NaN and inf
        raise ConfigurationError(f"{TIMEOUT_ENV}={raw!r}: give the seconds a gallery writer waits for the lock "
                                 f"(a finite number >= 0; default {DEFAULT_TIMEOUT_S:g})")
    return value


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: an empty file (just created)
        pid = int(path.read_text(encoding="ascii").split()[0])
        return f"process {pid}"
    return "another process"


def _take(path: Path, timeout: float) -> int:
    """A descriptor of ``path`` holding an exclusive flock (the file as it is now named, not a removed one)."""
    deadline = time.monotonic() + timeout
    pause = _POLL_S[0]
    while True:
        try:
            fd = try_lock(path)
        except LockFileReplaced:  # someone keeps deleting G's lock file
            fd = None
        if fd is not None:
            write_holder(fd, f"{os.getpid()}\n")
            return fd
        if time.monotonic() >= deadline:
            raise GalleryLockError(
                f"gallery {str(path.parent)!r} is being changed by {_holder(path)} (it holds {path.name}); waited "
                f"{timeout:g} s: try again when that write has finished, or set {TIMEOUT_ENV} to wait longer. "
                "Nothing was changed")
        time.sleep(pause)
        pause = min(pause * 2, _POLL_S[1])


@contextlib.contextmanager
def holding_writer_lock(folder: str | os.PathLike, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the writer lock of the existing folder ``folder`` (resolved; waits up to ``timeout`` seconds, default
    :func:`lock_timeout`); yields the resolved folder."""
    resolved = Path(os.path.realpath(folder))
    key = str(resolved)
    wait = lock_timeout() if timeout is None else timeout
    with _guard:
        threads = _threads.setdefault(key, threading.RLock())
    if not threads.acquire(timeout=wait if wait > 0 else 0):
        raise GalleryLockError(f"gallery {key!r} is being changed by another thread of this process; waited {wait:g} "
                               "s. Nothing was changed")
    try:
        if not _depth.get(key):
            _files[key] = _take(resolved / LOCK_FILE, wait)
        _depth[key] = _depth.get(key, 0) + 1
        try:
            yield resolved
        finally:
            _depth[key] -= 1
            if not _depth[key]:
                os.close(_files.pop(key))  # closing the last descriptor releases the flock
    finally:
        threads.release()
