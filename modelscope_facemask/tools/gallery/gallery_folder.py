"""The on-disk format of a face gallery: a stable folder whose manifest names one complete, verified generation.

Layout of a gallery folder ``G`` (format 2)::

    G/manifest.json               format and version, the generation folder holding the files, the recognizer
                                  weights sha256, the embedding-contract sha256 and the contract itself, the index
                                  kind, counts, next row id, the creating and last writing package versions, and the
                                  size and sha256 of the two files below (:class:`GalleryManifest`)
    G/gen-NNNNNN-xxxxxxxx/        the generation the manifest names (NNNNNN counts the writes):
        index.faiss               the vector index (``VectorIndex.save``): inner product on unit embeddings,
                                  ids = row ids
        rows.parquet              one row per enrolled image: id (int64), identity, source, key, embedding
    G/.facemask-gallery.lock      the writer lock (:mod:`~modelscope_facemask.tools.gallery.writer_lock`)

**Writing.** ``G`` itself is never renamed or removed, so a gallery reached through a symbolic link is written
through to the link's target (the path is resolved). A writer holds the writer lock for its whole read-modify-write,
writes a new generation folder, then switches ``manifest.json`` atomically (a temporary file renamed over it): that
rename is the moment the new gallery exists. Only then are older generations removed. Holding the lock also proves
that no other writer is alive, so the writer first removes what dead writers left: generation folders the manifest
does not name, temporary manifests, and the hidden ``.G.facemask-tmp-*`` siblings of earlier versions.

**Reading.** A reader (no lock) reads the manifest, then checks every file of its generation (size and sha256)
and the row counts against it, so a truncated or hand-edited gallery is refused (:class:`GalleryFormatError`),
never read as good. When a generation fails to read and the manifest meanwhile names another one (a writer
switched and removed the old one), the reader retries with the new manifest (:data:`READ_ATTEMPTS` times): it
sees the old gallery or the new one, never a half-written one.

**Format 1** galleries (``G/index.faiss``, ``G/rows.parquet``, ``G/manifest.json`` directly in ``G``; written by
earlier versions) are read as they are; their next write converts them to format 2.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...support.atomic_files import _TMP_MARK
from ...errors import GalleryFormatError, IndexFileError, OutputFolderError
from .gallery_manifest import (FORMAT, FORMAT_VERSION, GENERATION_NAME, INDEX_FILE, MANIFEST_FILE, REBUILD,
                               ROWS_FILE, GalleryManifest)
from .writer_lock import LOCK_FILE, holding_writer_lock

__all__ = ["FORMAT", "FORMAT_VERSION", "INDEX_FILE", "MANIFEST_FILE", "ROWS_FILE", "GalleryManifest", "GalleryRows",
           "data_folder", "folder_state", "is_gallery_folder", "read_gallery_folder", "read_manifest",
           "write_gallery_folder", "writer_lock"]

#: how often a reader re-reads a gallery whose generation was replaced while it read it
READ_ATTEMPTS = 8
_REBUILD = REBUILD
_TEMPORARY_MANIFEST = f".{MANIFEST_FILE}{_TMP_MARK}"


@dataclass
class GalleryRows:
    """The gallery table in memory, sorted by ``ids`` (ascending, unique)."""

    ids: np.ndarray  # int64 (n,)
    identities: np.ndarray  # object (n,) of str
    sources: np.ndarray  # object (n,) of str
    keys: np.ndarray  # object (n,) of str
    embeddings: np.ndarray  # float32 (n, dim)

    def __len__(self) -> int:
        return len(self.ids)


def _pyarrow() -> Any:
    from ...support.extras import require

    require("pyarrow", "gallery", "the face gallery's Parquet table")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _sha256(path: Path) -> str:
    from ...model_files.manifest import file_sha256

    return file_sha256(path)


# ---------------------------------------------------------------------------------------------------- reading
def read_manifest(path: str | os.PathLike) -> GalleryManifest:
    """The manifest of gallery folder ``path``, every key checked; :class:`GalleryFormatError` otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise GalleryFormatError(f"no gallery folder {str(folder)!r}: build one with `facemask gallery build SRC "
                                 f"--out {folder}`")
    manifest_path = folder / MANIFEST_FILE
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GalleryFormatError(f"{str(folder)!r} is not a FaceMask gallery (no {MANIFEST_FILE}); {_REBUILD}") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryFormatError(f"{str(manifest_path)!r} cannot be read ({type(exc).__name__}: {exc}); {_REBUILD}") \
            from None
    return GalleryManifest.from_json(data, str(manifest_path))


def is_gallery_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a readable FaceMask gallery manifest (files not checked)."""
    try:
        read_manifest(path)
    except GalleryFormatError:
        return False
    return True


def data_folder(folder: Path, manifest: GalleryManifest) -> Path:
    """The folder holding the files of ``manifest``: its generation folder (format 2) or ``folder`` (format 1)."""
    return folder / manifest.generation if manifest.generation else folder


def check_files(folder: Path, manifest: GalleryManifest) -> None:
    """Every file the manifest lists exists with its recorded size and sha256."""
    where = data_folder(folder, manifest)
    for name, recorded in manifest.files.items():
        path = where / name
        try:
            size = path.stat().st_size if path.is_file() else None
            digest = _sha256(path) if size == recorded.size else None
        except FileNotFoundError:
            size = None
        except OSError as exc:
            raise GalleryFormatError(f"gallery {str(folder)!r}: {name} cannot be read ({exc.strerror or exc}); "
                                     f"check its permissions, or {_REBUILD}") from None
        if size is None:
            raise GalleryFormatError(f"gallery {str(folder)!r} is incomplete: {name} is missing; {_REBUILD}")
        if size != recorded.size or digest != recorded.sha256:
            raise GalleryFormatError(f"gallery {str(folder)!r} is damaged: {name} does not match its manifest "
                                     f"(size {size}, manifest {recorded.size}; half-written or modified); "
                                     f"{_REBUILD}")


def _write_rows(path: Path, rows: GalleryRows) -> None:
    pa, pq = _pyarrow()
    dim = rows.embeddings.shape[1]
    flat = pa.array(np.ascontiguousarray(rows.embeddings, np.float32).reshape(-1), pa.float32())
    table = pa.table({
        "id": pa.array(rows.ids, pa.int64()),
        "identity": pa.array(list(rows.identities), pa.string()),
        "source": pa.array(list(rows.sources), pa.string()),
        "key": pa.array(list(rows.keys), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    })
    pq.write_table(table, path)


def _read_rows(folder: Path, where: Path, dim: int) -> GalleryRows:
    pa, pq = _pyarrow()
    try:
        table = pq.read_table(where / ROWS_FILE)
        embedding = table.column("embedding").combine_chunks()
        values = embedding.flatten().to_numpy(zero_copy_only=False)
        rows = GalleryRows(
            ids=table.column("id").to_numpy().astype(np.int64),
            identities=np.array(table.column("identity").to_pylist(), dtype=object),
            sources=np.array(table.column("source").to_pylist(), dtype=object),
            keys=np.array(table.column("key").to_pylist(), dtype=object),
            embeddings=np.asarray(values, np.float32).reshape(len(table), dim))
    except (KeyError, ValueError, OSError, pa.ArrowException) as exc:
        raise GalleryFormatError(f"the table {ROWS_FILE} of gallery {str(folder)!r} cannot be read "
                                 f"({type(exc).__name__}: {exc}); {_REBUILD}") from None
    return rows


def _read_generation(folder: Path, manifest: GalleryManifest) -> tuple[Any, GalleryRows]:
    from .vector_index import VectorIndex

    check_files(folder, manifest)
    rows = _read_rows(folder, data_folder(folder, manifest), manifest.embedding_dim)
    index = VectorIndex.load(data_folder(folder, manifest) / INDEX_FILE)
    if not (len(rows) == len(index) == manifest.images):
        raise GalleryFormatError(f"gallery {str(folder)!r} is inconsistent: {len(rows)} table rows, {len(index)} "
                                 f"index vectors, manifest says {manifest.images}; {_REBUILD}")
    if index.kind != manifest.index_kind or index.dim != manifest.embedding_dim:
        raise GalleryFormatError(f"gallery {str(folder)!r} is inconsistent: its index is {index.kind}, "
                                 f"{index.dim}-d, the manifest says {manifest.index_kind}, {manifest.embedding_dim}-d; "
                                 f"{_REBUILD}")
    if len(rows) and (np.any(np.diff(rows.ids) <= 0) or rows.ids[-1] >= manifest.next_id):
        raise GalleryFormatError(f"gallery {str(folder)!r}: the row ids of {ROWS_FILE} are not sorted and unique "
                                 f"below next_id; {_REBUILD}")
    return index, rows


def read_gallery_folder(path: str | os.PathLike) -> tuple[Any, GalleryRows, GalleryManifest]:
    """(index, rows, manifest) of gallery folder ``path``, every file checked against the manifest; a generation
    replaced by a writer while it was read is read again from the new manifest (module docstring)."""
    folder = Path(path)
    manifest = read_manifest(folder)
    for _ in range(READ_ATTEMPTS):
        try:
            index, rows = _read_generation(folder, manifest)
        except (GalleryFormatError, IndexFileError):
            try:
                newer = read_manifest(folder)
            except GalleryFormatError:
                newer = manifest
            if newer == manifest:
                raise  # nobody changed the gallery: the damage is real
            manifest = newer
            continue
        return index, rows, manifest
    raise GalleryFormatError(f"gallery {str(folder)!r} was replaced {READ_ATTEMPTS} times while being read (other "
                             "processes keep writing it); try again")


# ---------------------------------------------------------------------------------------------------- writing
def _is_ours(name: str) -> bool:
    """A name this package writes into a gallery folder besides the manifest."""
    return name == LOCK_FILE or bool(GENERATION_NAME.fullmatch(name)) or name.startswith(_TEMPORARY_MANIFEST)


def folder_state(path: str | os.PathLike) -> str:
    """What ``path`` is to a gallery writer: "missing", "gallery" (a readable manifest), "unfinished" (only this
    package's files, no manifest yet: a first write that is running or was killed) or "foreign" (anything else,
    never written into)."""
    folder = Path(path)
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "foreign"
    if (folder / MANIFEST_FILE).exists():
        return "gallery" if is_gallery_folder(folder) else "foreign"
    names = [p.name for p in folder.iterdir()]
    return "unfinished" if LOCK_FILE in names and all(_is_ours(n) for n in names) else "foreign"


def _check_writable(target: Path, replace: bool) -> str:
    state = folder_state(target)
    if state in ("gallery", "foreign") and not replace:
        raise OutputFolderError(f"{str(target)!r} already exists: choose another --out, or remove it first")
    if state == "foreign":
        raise OutputFolderError(f"{str(target)!r} exists and is not a FaceMask gallery: it is never replaced; "
                                "choose another folder")
    return state


def _old_style_siblings(target: Path, named: Path) -> Iterator[Path]:
    """``.G.facemask-tmp-*`` siblings (of the folder and of the link it was reached through) that hold nothing but
    gallery files: what writers of format 1 left when they were killed."""
    allowed = {INDEX_FILE, ROWS_FILE, MANIFEST_FILE}
    for folder in dict.fromkeys((target, named.absolute())):
        prefix = f".{folder.name}{_TMP_MARK}"
        try:
            siblings = [p for p in folder.parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            continue
        for sibling in siblings:
            if sibling.is_symlink() or not sibling.is_dir():
                if sibling.is_symlink():
                    yield sibling  # a moved-aside link to a gallery: the link only
                continue
            with contextlib.suppress(OSError):
                if all(p.name in allowed or (p.name.startswith(".") and _TMP_MARK in p.name)
                       for p in sibling.iterdir()):
                    yield sibling


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _remove_leftovers(target: Path, named: Path, keep: GalleryManifest | None) -> None:
    """Remove, under the writer lock, every generation but ``keep``'s, temporary manifests, the format-1 files of a
    converted gallery and old-style temporary siblings (dead writers' leftovers: no other writer is alive)."""
    for entry in list(target.iterdir()):
        if GENERATION_NAME.fullmatch(entry.name) and (keep is None or entry.name != keep.generation):
            _remove(entry)
        elif entry.name.startswith(_TEMPORARY_MANIFEST):
            _remove(entry)
    if keep is not None and keep.generation is not None:
        for name in (INDEX_FILE, ROWS_FILE):
            _remove(target / name)
    for sibling in list(_old_style_siblings(target, named)):
        _remove(sibling)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writer_lock(path: str | os.PathLike) -> Any:
    """A context manager holding the writer lock of gallery folder ``path`` (yields the resolved folder): wrap a
    whole read-modify-write (load, change, save) in it so that concurrent writers keep each other's changes."""
    target = Path(os.path.realpath(path))
    if folder_state(target) not in ("gallery", "unfinished"):
        read_manifest(target)  # raises its GalleryFormatError for a missing or foreign folder
        raise GalleryFormatError(f"{str(target)!r} is not a FaceMask gallery; {_REBUILD}")
    return holding_writer_lock(target)


def write_gallery_folder(path: str | os.PathLike, index: Any, rows: GalleryRows, manifest: dict[str, Any], *,
                         replace: bool = False) -> Path:
    """Write a new generation of the gallery (index, table), then switch the manifest to it; returns the folder.

    ``path`` is resolved (a link is written through to its target). An existing gallery is replaced only when
    ``replace`` is true; anything else there raises :class:`OutputFolderError` and is left untouched. Holds the
    writer lock (reentrant: callers may hold it around their whole read-modify-write).
    """
    from ...support.json_output import write_json

    named = Path(path)
    target = Path(os.path.realpath(named))
    if _check_writable(target, replace) == "missing":
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.mkdir()
            (target / LOCK_FILE).touch()
        except FileExistsError:
            pass  # another writer is creating it: checked again under the lock
    with holding_writer_lock(target):
        _check_writable(target, replace)
        current = read_manifest(target) if folder_state(target) == "gallery" else None
        _remove_leftovers(target, named, current)
        number = (current.generation_number() if current else 0) + 1
        generation = target / f"gen-{number:06d}-{uuid.uuid4().hex[:8]}"
        generation.mkdir()
        switched = False
        try:
            index.save(generation / INDEX_FILE)
            _write_rows(generation / ROWS_FILE, rows)
            files = {}
            for name in (INDEX_FILE, ROWS_FILE):
                _fsync(generation / name)
                files[name] = {"size": (generation / name).stat().st_size, "sha256": _sha256(generation / name)}
            where = str(target / MANIFEST_FILE)
            new = GalleryManifest.from_json({**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                                             "generation": generation.name, "files": files}, where)
            # the switch: a temporary file, on disk before it is renamed over the manifest (the old generation is
            # removed right after, so an empty manifest after a power loss would lose the gallery)
            write_json(target / MANIFEST_FILE, new.to_json(), durable=True)
            switched = True
        except BaseException:
            if not switched:
                shutil.rmtree(generation, ignore_errors=True)
            raise
        _fsync(target)
        _remove_leftovers(target, named, new)
    return target
