"""Atomic writes: every file or folder this package writes is assembled in a temporary sibling and renamed into place.

A reader (or a crash) never sees a half-written output, and nothing is deleted that this package did not write:
a failed write removes only its own temporary sibling.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

_TMP_MARK = ".facemask-tmp-"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh, unused name next to ``path`` (same folder, so that the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def writing_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically, on failure it is removed.

    Missing parent folders are created. The suffix of ``path`` is kept on the temporary name, so writers that
    choose a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp = tmp.with_name(tmp.name + path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``durable``: the bytes reach the disk (fsync) before the rename, so
    that after a power loss ``path`` holds the old or the new bytes, never an empty file."""
    with writing_file(path) as tmp:
        with tmp.open("wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())


def write_text_atomic(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``durable``: see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


@contextlib.contextmanager
def writing_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only with ``replace=True`` — the caller must have checked first that it is a folder
    this package provably wrote. The old folder is moved aside, the new one renamed in, then the old one removed,
    so a failure at any point leaves either the old or the new folder complete.
    """
    path = Path(path)
    staging = temporary_sibling(path)
    staging.mkdir(parents=True)
    try:
        yield staging
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(f"{str(path)!r} already exists")
            old = temporary_sibling(path)
            os.replace(path, old)
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(old, path)
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
