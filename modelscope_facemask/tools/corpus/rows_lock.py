"""One writer at a time per face-rows folder: an advisory ``flock`` on the lock file ``.facemask-rows.lock`` inside it.

Two ``facemask embed --out DIR`` runs (single-process or Ray) into one folder would each find the same sources
still to do and both write them (duplicate rows). A run holds the lock from before it reads the folder until its
last shard is written; a second run is refused at once with :class:`~modelscope_facemask.errors.FaceRowsError`
naming the process that holds it. The holder removes the lock file when it is done (a run leaves only shards); the
kernel releases the lock when the holder exits, even on a crash, so a leftover lock file never blocks anyone. A
run that locked a file another run has just removed notices (the path no longer names that file) and tries again.
Taking the lock again in the process that holds it is a no-op (the Ray driver and the command both take it).
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from ...errors import FaceRowsError
from ...support.file_locks import LockFileReplaced, try_lock, write_holder
from .face_rows import LOCK_NAME, shard_files

_held: dict[str, int] = {}  # real path of a locked folder -> nesting depth, in this process


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


@contextlib.contextmanager
def holding_rows_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the write lock of the rows folder ``folder`` (created if missing) for the ``with`` block.

    Raises :class:`FaceRowsError` at once, changing nothing, when another process holds it, or when ``folder``
    is not a rows folder (a lock file is never put into someone else's folder)."""
    folder = Path(folder)
    shard_files(folder)  # FaceRowsError: a file, or a folder holding anything else than shards
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    path = folder / LOCK_NAME
    fd = _lock(path, folder)
    try:
        write_holder(fd, f"process {os.getpid()} on {socket.gethostname()}\n")
        _held[key] = 1
        yield folder
    finally:
        _held.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a waiting run then sees that its file is gone
        os.close(fd)  # releases the lock


def _lock(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive flock, or :class:`FaceRowsError` when it is held."""
    try:
        fd = try_lock(path, held=(OSError,))  # any refused flock is reported as another run holding it
    except LockFileReplaced:
        raise FaceRowsError(f"rows folder {str(folder)!r}: its lock file {LOCK_NAME} kept being replaced "
                            "(20 attempts); make sure that only facemask embed writes this folder") from None
    if fd is None:
        raise FaceRowsError(
            f"rows folder {str(folder)!r} is being written by another facemask embed run{_holder(path)}; wait "
            "for it to finish and run again (the rerun skips what it wrote), or give another --out folder")
    return fd
