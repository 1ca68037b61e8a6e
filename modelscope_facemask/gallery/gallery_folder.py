"""The on-disk format of a face gallery: one folder, written atomically, checked against its manifest when read.

Layout of a gallery folder ``G``::

    G/index.faiss     the vector index (``VectorIndex.save``): inner product on unit embeddings, ids = row ids
    G/rows.parquet    one row per enrolled image: id (int64), identity, source, key, embedding (float32 list)
    G/manifest.json   format and version, the recognizer weights sha256, the embedding-contract sha256 and the
                      contract itself, the index kind, counts, next row id, the creating and last writing package
                      versions, and the size and sha256 of the two files above

The whole folder is assembled next to ``G`` and renamed into place (``atomic_files.writing_folder``), the manifest
written last; a reader checks every file's size and sha256 and the row counts against the manifest, so a
half-written, truncated or hand-edited gallery is refused (:class:`GalleryFormatError`), never read as good.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryFormatError, OutputFolderError

FORMAT = "facemask-gallery"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.parquet"
MANIFEST_FILE = "manifest.json"
_REBUILD = "rebuild it with `facemask gallery build SRC --out G`"


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
    from ..extras import require

    require("pyarrow", "gallery", "the face gallery's Parquet table")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _sha256(path: Path) -> str:
    from ..hub.manifest import file_sha256

    return file_sha256(path)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of gallery folder ``path`` (format and version checked); :class:`GalleryFormatError` otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise GalleryFormatError(f"no gallery folder {str(folder)!r}: build one with `facemask gallery build SRC "
                                 f"--out {folder}`")
    manifest_path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GalleryFormatError(f"{str(folder)!r} is not a FaceMask gallery (no {MANIFEST_FILE}); {_REBUILD}") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryFormatError(f"{str(manifest_path)!r} cannot be read ({type(exc).__name__}: {exc}); {_REBUILD}") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GalleryFormatError(f"{str(manifest_path)!r} is not a FaceMask gallery manifest (format "
                                 f"{manifest.get('format') if isinstance(manifest, dict) else None!r}); {_REBUILD}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise GalleryFormatError(f"gallery {str(folder)!r} has format version {version!r}; this modelscope-facemask "
                                 f"reads version {FORMAT_VERSION}: upgrade the package or {_REBUILD}")
    return manifest


def is_gallery_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a readable FaceMask gallery manifest (files not checked)."""
    try:
        read_manifest(path)
    except GalleryFormatError:
        return False
    return True


def check_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists with its recorded size and sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {INDEX_FILE, ROWS_FILE}:
        raise GalleryFormatError(f"the manifest of gallery {str(folder)!r} does not list {INDEX_FILE} and {ROWS_FILE}; "
                                 f"{_REBUILD}")
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            raise GalleryFormatError(f"gallery {str(folder)!r} is incomplete: {name} is missing; {_REBUILD}")
        size = path.stat().st_size
        if size != recorded.get("size") or _sha256(path) != recorded.get("sha256"):
            raise GalleryFormatError(f"gallery {str(folder)!r} is damaged: {name} does not match its manifest "
                                     f"(size {size}, manifest {recorded.get('size')}; half-written or modified); "
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


def _read_rows(folder: Path, dim: int) -> GalleryRows:
    pa, pq = _pyarrow()
    try:
        table = pq.read_table(folder / ROWS_FILE)
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


def read_gallery_folder(path: str | os.PathLike) -> tuple[Any, GalleryRows, dict[str, Any]]:
    """(index, rows, manifest) of gallery folder ``path``, every file checked against the manifest."""
    from .vector_index import VectorIndex

    folder = Path(path)
    manifest = read_manifest(folder)
    check_files(folder, manifest)
    rows = _read_rows(folder, int(manifest["embedding_dim"]))
    index = VectorIndex.load(folder / INDEX_FILE)
    counts = manifest.get("counts", {})
    if not (len(rows) == len(index) == counts.get("images")):
        raise GalleryFormatError(f"gallery {str(folder)!r} is inconsistent: {len(rows)} table rows, {len(index)} "
                                 f"index vectors, manifest says {counts.get('images')}; {_REBUILD}")
    if len(rows) and (np.any(np.diff(rows.ids) <= 0) or rows.ids[-1] >= manifest.get("next_id", 0)):
        raise GalleryFormatError(f"gallery {str(folder)!r}: the row ids of {ROWS_FILE} are not sorted and unique "
                                 f"below next_id; {_REBUILD}")
    return index, rows, manifest


def write_gallery_folder(path: str | os.PathLike, index: Any, rows: GalleryRows, manifest: dict[str, Any], *,
                         replace: bool = False) -> None:
    """Write the folder atomically (index, table, then the manifest with their sizes and sha256).

    An existing ``path`` is replaced only when ``replace`` is true and it is a FaceMask gallery; anything else there
    raises :class:`OutputFolderError` and is left untouched.
    """
    from ..atomic_files import writing_folder
    from ..json_output import write_json

    target = Path(path)
    if target.exists() or target.is_symlink():
        if not replace:
            raise OutputFolderError(f"{str(target)!r} already exists: choose another --out, or remove it first")
        if not is_gallery_folder(target):
            raise OutputFolderError(f"{str(target)!r} exists and is not a FaceMask gallery: it is never replaced; "
                                    "choose another folder")
    with writing_folder(target, replace=replace) as staging:
        index.save(staging / INDEX_FILE)
        _write_rows(staging / ROWS_FILE, rows)
        files = {name: {"size": (staging / name).stat().st_size, "sha256": _sha256(staging / name)}
                 for name in (INDEX_FILE, ROWS_FILE)}
        write_json(staging / MANIFEST_FILE, {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                                             "files": files})
