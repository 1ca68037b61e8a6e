"""What a command may write: a command never overwrites a file it did not write.

An output file is refused (:class:`~modelscope_facemask.errors.OutputPathError`, exit 2, before anything is written)
when it is one of the command's inputs (compared by device and inode, so through symlinks and hard links), when it
lies inside a folder the command reads or writes (a gallery, a face-rows folder, a model folder) or inside any
FaceMask gallery or face-rows folder, and when it exists and ``--overwrite`` was not given. Output *folders* keep
their own rules (replaced only when provably an unchanged earlier output of the package: ``gallery build --replace``,
``pack``/``export --force``, ``demo``; ``embed --out DIR`` appends to its own rows folder); :func:`check_output_folder`
only refuses one inside a folder the command reads, or inside a gallery.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import OutputPathError
from .common import check_output_file as check_writable_file, check_output_parent

#: what ``folders`` maps to: a folder and how to name it in the message ("the gallery being written")
Folders = Mapping[str, str]


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace ``what`` (e.g. "an existing --json file") when it exists."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} when it exists (default: refused, exit 2); an input of the command or "
                             "a file inside a gallery or face-rows folder is refused even so")


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # missing, dangling symlink, unreadable, NUL byte
        return None
    return stat.st_dev, stat.st_ino


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file: the same device and inode when both exist (through symlinks
    and hard links, like os.path.samefile), else the same resolved path."""
    ids = _file_id(a), _file_id(b)
    if ids[0] is not None and ids[1] is not None:
        return ids[0] == ids[1]
    return os.path.realpath(a) == os.path.realpath(b)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies at any depth inside it, symlinks resolved (each existing ancestor of
    ``path`` is also compared with ``folder`` by device and inode)."""
    resolved, container = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if resolved == container or container in resolved.parents:
        return True
    folder_id = _file_id(folder)
    return folder_id is not None and any(_file_id(a) == folder_id for a in (resolved, *resolved.parents))


def enclosing_store(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(folder, what) when ``path`` lies inside a FaceMask gallery (at any depth) or directly inside a face-rows
    folder of ``facemask embed --out DIR``: folders whose files this package checks, so a stranger file breaks them."""
    from ..errors import FaceRowsError
    from ..tools.corpus.face_rows import shard_files
    from ..tools.gallery.gallery_folder import MANIFEST_FILE, is_gallery_folder

    resolved = Path(os.path.realpath(path))
    for ancestor in resolved.parents:
        if (ancestor / MANIFEST_FILE).is_file() and is_gallery_folder(ancestor):
            return ancestor, "a FaceMask gallery"
    try:
        if shard_files(resolved.parent):
            return resolved.parent, "a face-rows folder"
    except FaceRowsError:  # holds other files: not a rows folder
        pass
    return None


def _refuse_inside(path: str | os.PathLike, option: str, folders: Folders) -> None:
    for folder, what in folders.items():
        if is_inside(path, folder):
            raise OutputPathError(f"{option} {str(path)!r} is inside {what} {str(folder)!r}: writing there would "
                                  "change what the command reads or writes; choose a path outside it")
    store = enclosing_store(path)
    if store is not None:
        raise OutputPathError(f"{option} {str(path)!r} is inside {store[1]} {str(store[0])!r}, whose files are "
                              "checked: a file written there would make it unreadable; choose a path outside it")


def check_not_an_input(path: str | os.PathLike, option: str, reads: Iterable[str | os.PathLike]) -> None:
    """:class:`OutputPathError` when ``path`` is one of the files in ``reads`` (URLs are skipped). Only an existing
    ``path`` can be one, so nothing is compared otherwise."""
    from ..tools.corpus.face_rows import is_url

    target = _file_id(path)
    if target is None:
        return
    for source in reads:
        if not is_url(str(source)) and _file_id(source) == target:
            raise OutputPathError(f"{option} {str(path)!r} is the input {str(source)!r} of this command: a command "
                                  "never overwrites its inputs; choose another file name")


def check_output_file(path: str | os.PathLike, option: str, *, reads: Iterable[str | os.PathLike] = (),
                      folders: Folders | None = None, overwrite: bool = False,
                      overwrite_option: str = "--overwrite") -> Path:
    """``path`` as a Path, checked before any model loads: writable (not a folder, parent not a file, writable
    parent), not one of the files in ``reads``, not inside one of ``folders`` (folder -> how to name it) nor inside
    a gallery or rows folder, and, unless ``overwrite``, not an existing file (the message names
    ``overwrite_option``). Raises :class:`UsageError` or :class:`OutputPathError` (both exit 2)."""
    target = check_writable_file(path, option)
    check_not_an_input(target, option, reads)
    _refuse_inside(target, option, folders or {})
    if not overwrite and os.path.lexists(target):
        raise OutputPathError(f"{option} {str(path)!r} already exists: pass "
                              f"{overwrite_option} to replace it, or choose another file name")
    return target


def check_output_folder(path: str | os.PathLike, option: str, *, folders: Folders | None = None) -> Path:
    """``path`` as a Path when its parent can hold it and it lies neither inside one of ``folders`` (folder -> how
    to name it: the folders the command reads) nor inside a gallery; whether an existing ``path`` may be replaced
    or appended to is the command's own rule. Raises :class:`UsageError` or :class:`OutputPathError`."""
    target = check_output_parent(path, option)
    for folder, what in (folders or {}).items():
        if is_inside(target, folder) or is_inside(folder, target):
            raise OutputPathError(f"{option} {str(path)!r} and {what} {str(folder)!r} overlap (one is inside the "
                                  "other): writing there would change what the command reads; choose a folder "
                                  "outside it")
    store = enclosing_store(target)
    if store is not None:
        raise OutputPathError(f"{option} {str(path)!r} is inside {store[1]} {str(store[0])!r}, whose files are "
                              "checked: a folder written there would make it unreadable; choose a folder outside it")
    return target


def check_distinct(outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """:class:`OutputPathError` when two of the options in ``outputs`` (option -> path or None) name the same file."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for index, (option, path) in enumerate(given):
        for other, other_path in given[index + 1:]:
            if same_file(path, other_path):
                raise OutputPathError(f"{option} and {other} name the same file {str(path)!r}: give each its own")
