"""``manifest.json``: the sha256 and size of every file of a packed model repository, verified on load.

``facemask pack`` writes it; :func:`verify_manifest` is called by the model and preprocessor loaders for the files
they read, so a truncated download or a file changed after packing fails loudly with :class:`CheckpointError`
naming the file, instead of loading silently. A folder without a manifest (e.g. the official hub card) is accepted
as it is. Hidden files and folders (``.ms_upload_cache``, ``.git``, the ``.mdl``/``.msc`` files ModelScope's cache
adds) are never listed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import CheckpointError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "modelscope-facemask-manifest/1"

_digest_cache: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file; cached per process by (path, size, mtime, inode), so reloading a model does not re-hash."""
    from .assets import sha256_file

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _digest_cache:
        _digest_cache[key] = sha256_file(path)
    return _digest_cache[key]


def listed_files(folder: str | os.PathLike) -> list[str]:
    """Posix paths (relative to ``folder``) of the files a manifest covers: all but hidden ones and the manifest."""
    folder = Path(folder)
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and rel.as_posix() != MANIFEST_FILE and not any(p.startswith(".") for p in rel.parts):
            files.append(rel.as_posix())
    return sorted(files)


def build_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """``{"format": ..., "files": {path: {"sha256": hex, "size": bytes}}}`` for every file of ``folder``."""
    folder = Path(folder)
    files = {rel: {"sha256": file_sha256(folder / rel), "size": (folder / rel).stat().st_size}
             for rel in listed_files(folder)}
    return {"format": MANIFEST_FORMAT, "files": files}


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/manifest.json`` describing the folder's current files."""
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(build_manifest(folder), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, Any]] | None:
    """The ``files`` table of ``folder/manifest.json``, or None when the folder has no manifest."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        for rel, entry in files.items():
            if not (isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int)):
                raise ValueError(f"entry {rel!r} lacks sha256/size")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a valid modelscope-facemask manifest ({exc}); "
                              "re-download the repository or re-run `facemask pack`") from None
    return files


def _selected(files: Iterable[str], folder: Path, within: Iterable[str | os.PathLike] | None) -> list[str]:
    if within is None:
        return sorted(files)
    root = Path(os.path.abspath(folder))
    prefixes = []
    for item in within:
        try:
            prefixes.append(Path(os.path.abspath(item)).relative_to(root).as_posix())
        except ValueError:  # outside the model folder: not covered by its manifest
            continue
    return sorted(f for f in files if any(p == "." or f == p or f.startswith(f"{p}/") for p in prefixes))


def verify_manifest(model_dir: str | os.PathLike, within: Iterable[str | os.PathLike] | None = None) -> int:
    """Check the files listed in ``model_dir/manifest.json`` (only those at or under the paths in ``within``, when
    given: ordinary file-system paths, e.g. ``model_dir / "configuration.json"``; paths outside ``model_dir`` are
    ignored). Returns how many were verified (0 without a manifest).

    Raises :class:`CheckpointError` naming the first missing, resized or altered file.
    """
    folder = Path(model_dir)
    files = read_manifest(folder)
    if files is None:
        return 0
    chosen = _selected(files, folder, within)
    for rel in chosen:
        path, expected = folder / rel, files[rel]
        hint = ("re-download the repository; if you changed the file on purpose, re-run `facemask pack` "
                f"(or delete {MANIFEST_FILE})")
        if not path.is_file():
            raise CheckpointError(f"{str(path)!r} is listed in {MANIFEST_FILE} but missing; {hint}")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{str(path)!r} is corrupted: {size} bytes, {MANIFEST_FILE} says "
                                  f"{expected['size']}; {hint}")
        digest = file_sha256(path)
        if digest != expected["sha256"]:
            raise CheckpointError(f"{str(path)!r} is corrupted: sha256 {digest}, {MANIFEST_FILE} says "
                                  f"{expected['sha256']}; {hint}")
    return len(chosen)
