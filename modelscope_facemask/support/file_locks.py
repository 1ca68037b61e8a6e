"""The one locking primitive the gallery and face-rows writers share: an exclusive ``fcntl.flock`` on a lock file.

The kernel releases a flock when its holder exits, also on ``kill -9``, so a lock that can be taken proves that
no other holder is alive. A lock file may be removed by its holder on release (face rows) while another process
waits on it; :func:`try_lock` therefore checks that the file it locked is still the one ``path`` names.
"""
from __future__ import annotations

import os
from pathlib import Path


class LockFileReplaced(OSError):
    """The lock file kept being removed or replaced while it was being locked."""


def try_lock(path: str | os.PathLike, *, attempts: int = 20,
             held: tuple[type[OSError], ...] = (BlockingIOError,)) -> int | None:
    """An open descriptor of ``path`` (created if missing) holding its exclusive flock, or None when the flock is
    refused with one of ``held`` (another process holds it); :class:`LockFileReplaced` when the file was replaced
    under it ``attempts`` times in a row."""
    import fcntl

    path = Path(path)
    for _ in range(attempts):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except held:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not removed or replaced while we locked it
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file as we locked it: lock the one the path names now
    raise LockFileReplaced(f"lock file {str(path)!r} kept being replaced ({attempts} attempts)")


def write_holder(fd: int, text: str) -> None:
    """Replace the content of the locked file ``fd`` by ``text`` (who holds it, for the messages of others)."""
    os.ftruncate(fd, 0)
    os.write(fd, text.encode("utf-8"))
