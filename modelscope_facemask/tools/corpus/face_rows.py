"""Face rows: embeddings as an Arrow/Parquet table, one row per detected face, for corpora too big for one file.

Columns: ``source`` (string), ``face_index`` (int32; -1 for an image without a face or with an error),
``box`` (4 float32 x1, y1, x2, y2), ``score`` (float32), ``landmarks`` (10 float32 x0, y0, ... x4, y4),
``embedding`` (512 float32, unit length) and ``error`` (string, null when the image was read). ``box``, ``score``,
``landmarks`` and ``embedding`` are null on a face_index -1 row (and score/landmarks when detection is off).
The schema metadata holds, as JSON under the key ``facemask``, the model, weights sha256 and embedding contract
of the run (:func:`modelscope_facemask.tools.regress.run_metadata`).

A rows *folder* (``facemask embed --out DIR``) holds shards ``part-<sha>.parquet``, each written atomically (a
temporary hidden sibling renamed into place), so a shard that exists is complete; an interrupted run is resumed
by skipping the sources its shards already hold (:func:`done_sources`). Sources whose rows are error rows count as
done too, unless :func:`drop_error_rows` removes those rows first (``facemask embed --retry-errors``).

A local source is stored as its absolute path (:func:`source_name`, symlinks kept, a ``..`` resolved as the system
resolves it; URLs as given) and compared by its resolved path (:func:`source_key`: symlinks followed), so ``embed enrol`` and ``embed /abs/enrol`` find the same
sources done. Folders written by older versions, which stored paths as typed, are read the same way (a relative
source is taken against the working folder). One run at a time writes a folder
(:mod:`modelscope_facemask.tools.corpus.rows_lock`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from ...errors import FaceRowsError
from ...support.extras import require

METADATA_KEY = b"facemask"
LOCK_NAME = ".facemask-rows.lock"  # held by rows_lock while a run writes the folder
SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"
EMBEDDING_SIZE = 512
COLUMNS = ("source", "face_index", "box", "score", "landmarks", "embedding", "error")


def is_url(source: str) -> bool:
    """True for an http(s) URL (embedded by download, stored and compared as given)."""
    return source.startswith(("http://", "https://"))


def source_name(source: str | os.PathLike) -> str:
    """How a rows folder stores a source: a local path made absolute (symlinks kept, so the parent folder still
    names the identity); an http(s) URL unchanged. A path with ``..`` gets its folder resolved as the OS resolves
    it (``link/..`` is the parent of the link's target, which removing ``..`` as text would get wrong)."""
    source = os.fspath(source)
    if is_url(source):
        return source
    if ".." not in Path(source).parts:
        return os.path.abspath(source)
    head, tail = os.path.split(os.path.join(os.getcwd(), source))
    return os.path.join(os.path.realpath(head), tail)


def _folder_links(folder: str) -> tuple[str, frozenset[str]]:
    """(the resolved path of ``folder``, the names of the symlinks in it): one directory listing, no stat per file."""
    try:
        with os.scandir(folder) as entries:
            links = frozenset(e.name for e in entries if e.is_symlink())
    except OSError:  # a folder that is gone (rows of another machine) or unreadable: nothing to follow
        links = frozenset()
    return os.path.realpath(folder), links


def source_keys(sources: Sequence[str]) -> list[str]:
    """What sources are compared by: the resolved path of a local source (folder and file symlinks followed; a
    relative one against the working folder); a URL unchanged. Each folder is listed and resolved once."""
    folders: dict[str, tuple[str, frozenset[str]]] = {}
    keys = []
    for source in sources:
        source = str(source)
        if is_url(source):
            keys.append(source)
            continue
        head, tail = os.path.split(source_name(source))
        if head not in folders:
            folders[head] = _folder_links(head)
        real, links = folders[head]
        path = os.path.join(real, tail)
        keys.append(os.path.realpath(path) if tail in links else path)
    return keys


def source_key(source: str) -> str:
    """:func:`source_keys` of one source."""
    return source_keys([source])[0]


def _unique(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    names = [source_name(s) for s in sources]
    seen: set[str] = set()
    unique, keys = [], []
    for name, key in zip(names, source_keys(names)):
        if key not in seen:
            seen.add(key)
            unique.append(name)
            keys.append(key)
    return unique, keys


def unique_sources(sources: Sequence[str]) -> list[str]:
    """``sources`` as stored (:func:`source_name`), each photo once (by :func:`source_key`, first kept), in order."""
    return _unique(sources)[0]


def pending_sources(sources: Sequence[str], done: Collection[str]) -> tuple[list[str], int]:
    """(the :func:`unique_sources` of ``sources`` that are not ``done`` -- stored sources of a rows folder, compared
    by :func:`source_key` --, how many were done)."""
    unique, keys = _unique(sources)
    finished = set(source_keys(list(done)))
    pending = [name for name, key in zip(unique, keys) if key not in finished]
    return pending, len(unique) - len(pending)


def _pa() -> Any:
    return require("pyarrow", "ray", "face rows (Parquet)")


def face_rows_schema(metadata: Mapping[str, Any] | None = None, embedding_size: int = EMBEDDING_SIZE) -> Any:
    """The Arrow schema of face rows, with ``metadata`` as JSON under :data:`METADATA_KEY` when given."""
    pa = _pa()
    schema = pa.schema([
        ("source", pa.string()), ("face_index", pa.int32()), ("box", pa.list_(pa.float32(), 4)),
        ("score", pa.float32()), ("landmarks", pa.list_(pa.float32(), 10)),
        ("embedding", pa.list_(pa.float32(), embedding_size)), ("error", pa.string()),
    ])
    if metadata is not None:
        schema = schema.with_metadata({METADATA_KEY: json.dumps(dict(metadata), sort_keys=True).encode()})
    return schema


def _fixed_lists(values: np.ndarray, valid: np.ndarray, size: int) -> Any:
    """A fixed_size_list<float32>[size] array of the rows of ``values`` (n, size), null where ``valid`` is False."""
    pa = _pa()
    flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1), pa.float32())
    validity = pa.array(valid.astype(bool), pa.bool_()).buffers()[1] if not valid.all() else None
    return pa.FixedSizeListArray.from_buffers(pa.list_(pa.float32(), size), len(valid), [validity], children=[flat])


def face_rows(sources: Sequence[str], outputs: Sequence[Mapping[str, Any]], *,
              metadata: Mapping[str, Any] | None = None) -> Any:
    """The pipeline ``outputs`` of ``sources`` (same order) as a ``pyarrow.Table`` of face rows (module docstring).

    An output without faces or with an ``error`` gives one row with ``face_index`` -1 and null face columns.
    """
    pa = _pa()
    if len(sources) != len(outputs):
        raise FaceRowsError(f"face_rows: {len(sources)} source(s) but {len(outputs)} output(s); pass one pipeline "
                            "output per source")
    size = next((np.shape(o["img_embedding"])[1] for o in outputs if len(o["scores"])), EMBEDDING_SIZE)
    names, index, errors, boxes, scores, marks, embeds, has_face = [], [], [], [], [], [], [], []
    for source, output in zip(sources, outputs):
        count = len(output["scores"])
        error = output.get("error")
        if count == 0 or error is not None:
            names.append(str(source)), index.append(-1), errors.append(None if error is None else str(error))
            boxes.append(np.zeros((1, 4), np.float32)), scores.append(np.full(1, np.nan, np.float32))
            marks.append(np.full((1, 10), np.nan, np.float32)), embeds.append(np.zeros((1, size), np.float32))
            has_face.append(np.zeros(1, bool))
            continue
        names += [str(source)] * count
        index += range(count)
        errors += [None] * count
        boxes.append(np.asarray(output["boxes"], np.float32).reshape(count, 4))
        scores.append(np.asarray(output["scores"], np.float32).reshape(count))
        marks.append(np.asarray(output["keypoints"], np.float32).reshape(count, 10))
        embeds.append(np.asarray(output["img_embedding"], np.float32).reshape(count, size))
        has_face.append(np.ones(count, bool))
    face = np.concatenate(has_face) if has_face else np.zeros(0, bool)
    box = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    mark = np.concatenate(marks) if marks else np.zeros((0, 10), np.float32)
    embed = np.concatenate(embeds) if embeds else np.zeros((0, size), np.float32)
    columns = [
        pa.array(names, pa.string()), pa.array(np.asarray(index, np.int32), pa.int32()),
        _fixed_lists(box, face, 4),
        pa.array(score, pa.float32(), mask=~face | np.isnan(score)),  # use_det=False: NaN score -> null
        _fixed_lists(mark, face & ~np.isnan(mark).all(axis=1), 10),
        _fixed_lists(embed, face, size), pa.array(errors, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=face_rows_schema(metadata, size))


def rows_metadata(table: Any) -> dict[str, Any]:
    """The run metadata stored in a face-rows table's schema ({} when there is none)."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return {} if raw is None else json.loads(raw)


def run_identity(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What must agree for face rows to be comparable: weights sha256, embedding-contract hash and precision."""
    weights = metadata.get("weights") or {}
    return {"weights": {role: (info or {}).get("sha256") for role, info in sorted(weights.items())},
            "contract_sha256": metadata.get("contract_sha256"), "precision": metadata.get("precision")}


def check_same_run(expected: Mapping[str, Any], found: Mapping[str, Any], where: str) -> None:
    """Raise :class:`FaceRowsError` when ``found`` metadata comes from another model, contract or precision."""
    if run_identity(expected) != run_identity(found):
        raise FaceRowsError(
            f"{where} was written by another model, embedding contract or precision ({run_identity(found)}) than "
            f"this run ({run_identity(expected)}); write to a new folder, or rerun with the same model and options")


def write_face_rows(table: Any, path: str | os.PathLike) -> Path:
    """Write ``table`` to the Parquet file ``path`` atomically (a hidden temporary sibling renamed into place)."""
    from ...support.atomic_files import writing_file

    pq = require("pyarrow.parquet", "ray", "face rows (Parquet)")
    with writing_file(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def shard_name(table: Any) -> str:
    """``part-<sha256 of the shard's sources, 20 hex>.parquet``: deterministic for the same inputs."""
    digest = hashlib.sha256("\n".join(sorted(set(table.column("source").to_pylist()))).encode()).hexdigest()
    return f"{SHARD_PREFIX}{digest[:20]}{SHARD_SUFFIX}"


def write_shard(table: Any, folder: str | os.PathLike) -> Path:
    """Write ``table`` as one new shard in the rows folder ``folder`` (created if missing), atomically."""
    return write_face_rows(table, Path(folder) / shard_name(table))


def _is_lock(path: Path) -> bool:
    return path.name == LOCK_NAME


def _is_shard(path: Path) -> bool:
    return path.name.startswith(SHARD_PREFIX) and path.name.endswith(SHARD_SUFFIX) and path.is_file()


def _is_temporary(path: Path) -> bool:
    from ...support.atomic_files import _TMP_MARK

    return path.name.startswith(".") and _TMP_MARK in path.name


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The complete shards of a rows folder, sorted by name ([] for a missing folder). Raises
    :class:`FaceRowsError` when the folder holds anything else than shards, leftover temporary files and its lock
    file."""
    folder = Path(folder)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise FaceRowsError(f"face rows folder {str(folder)!r} is a file; give a folder name (or FILE.parquet)")
    entries = sorted(folder.iterdir())
    strangers = [p.name for p in entries if not _is_shard(p) and not _is_temporary(p) and not _is_lock(p)]
    if strangers:
        raise FaceRowsError(
            f"{str(folder)!r} is not a face rows folder: it holds {', '.join(map(repr, strangers[:5]))}"
            f"{' ...' if len(strangers) > 5 else ''}; give an empty or new folder, or one written by facemask embed")
    return [p for p in entries if _is_shard(p)]


def _read_file(path: Path, columns: Sequence[str] | None) -> Any:
    pq = require("pyarrow.parquet", "ray", "face rows (Parquet)")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - ArrowInvalid, OSError, ...
        raise FaceRowsError(f"cannot read face rows {str(path)!r} ({type(exc).__name__}: {exc}); pass a Parquet "
                            "file or folder written by facemask embed --out") from exc
    expected = face_rows_schema(embedding_size=_embedding_size(schema))
    missing = [f"{f.name}: {f.type}" for f in expected if schema.names.count(f.name) != 1
               or schema.field(f.name).type != f.type]
    if missing or METADATA_KEY not in (schema.metadata or {}):
        what = f"columns missing or of another type ({', '.join(missing)})" if missing else "no facemask metadata"
        raise FaceRowsError(f"{str(path)!r} is not a face-rows Parquet file: {what}; write it with "
                            "facemask embed --out DIR (or FILE.parquet)")
    return pq.read_table(path, columns=list(columns) if columns is not None else list(COLUMNS))


def _embedding_size(schema: Any) -> int:
    try:
        return schema.field("embedding").type.list_size
    except (KeyError, AttributeError):
        return EMBEDDING_SIZE


def read_face_rows(path: str | os.PathLike, *, columns: Sequence[str] | None = None) -> Any:
    """A face-rows ``pyarrow.Table`` (with its run metadata) from a ``.parquet`` file or a folder of shards.

    Shards are read in name order and must come from the same model, contract and precision; the table carries the
    first shard's metadata. Raises :class:`FaceRowsError` for an unreadable or foreign file, an empty folder or
    mixed runs. ``columns``: read only these (default: all of :data:`COLUMNS`).
    """
    pa = _pa()
    path = Path(path)
    if path.is_file():
        return _read_file(path, columns)
    if not path.is_dir():
        raise FaceRowsError(f"no face rows at {str(path)!r}: no such file or folder; pass the --out of facemask embed")
    files = shard_files(path)
    if not files:
        raise FaceRowsError(f"face rows folder {str(path)!r} holds no shards ({SHARD_PREFIX}*{SHARD_SUFFIX}); run "
                            f"facemask embed SRC --out {str(path)!r} first")
    tables = [_read_file(f, columns) for f in files]
    first = rows_metadata(tables[0])
    for f, table in zip(files[1:], tables[1:]):
        check_same_run(first, rows_metadata(table), f"shard {str(f)!r}")
    return pa.concat_tables([t.replace_schema_metadata(tables[0].schema.metadata) for t in tables])


def done_sources(folder: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> set[str]:
    """The sources the complete shards of ``folder`` already hold (empty for a new folder); with ``metadata``,
    every shard must come from the same model, contract and precision (:class:`FaceRowsError` otherwise)."""
    done: set[str] = set()
    for f in shard_files(folder):
        table = _read_file(f, ["source"])
        if metadata is not None:
            check_same_run(metadata, rows_metadata(table), f"shard {str(f)!r}")
        done.update(table.column("source").to_pylist())
    return done


def drop_error_rows(folder: str | os.PathLike, sources: Collection[str]) -> list[str]:
    """Remove the error rows (``error`` not null) of ``sources`` (compared by :func:`source_key`) from the shards of
    a rows folder, so that those sources count as not done and the next run embeds them again. Each shard
    concerned is rewritten atomically in place (removed when nothing else is left in it), so an interruption leaves
    every shard either as it was or without those rows. Returns the stored sources whose error rows were removed,
    in shard order."""
    pc = require("pyarrow.compute", "ray", "face rows (Parquet)")
    pa = _pa()
    wanted = set(source_keys(list(sources)))
    removed: list[str] = []
    for path in shard_files(folder):
        listing = _read_file(path, ["source", "error"])  # the embeddings are read only for a shard that changes
        failed = pc.is_valid(listing.column("error"))
        candidates = sorted(set(listing.filter(failed).column("source").to_pylist()))
        matched = [s for s, key in zip(candidates, source_keys(candidates)) if key in wanted]
        if not matched:
            continue
        drop = pc.and_(failed, pc.is_in(listing.column("source"), value_set=pa.array(matched, pa.string())))
        removed += listing.filter(drop).column("source").to_pylist()
        kept = _read_file(path, None).filter(pc.invert(drop))
        if kept.num_rows:
            write_face_rows(kept, path)
        else:
            path.unlink()
    return removed


def check_folder_run(folder: str | os.PathLike, metadata: Mapping[str, Any], where: str) -> None:
    """Raise :class:`FaceRowsError` when the rows already in ``folder`` come from another model, contract or
    precision than ``metadata`` (nothing to check in a new or empty folder)."""
    existing = folder_metadata(folder)
    if existing is not None:
        check_same_run(metadata, existing, where)


def folder_metadata(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of the first shard of a rows folder (None when it has none)."""
    files = shard_files(folder)
    return rows_metadata(_read_file(files[0], ["source"])) if files else None


def count_images(table: Any) -> tuple[int, int, int]:
    """(images, faces, errors) in a face-rows table: each image has exactly one row with face_index 0 or -1."""
    pc = require("pyarrow.compute", "ray", "face rows (Parquet)")
    index = table.column("face_index")
    images = pc.sum(pc.less_equal(index, 0)).as_py() or 0
    faces = pc.sum(pc.greater_equal(index, 0)).as_py() or 0
    errors = pc.sum(pc.is_valid(table.column("error"))).as_py() or 0
    return int(images), int(faces), int(errors)


def count_faceless(table: Any) -> int:
    """Images in a face-rows table read without an error but without a face (a face_index -1 row, no error)."""
    pc = require("pyarrow.compute", "ray", "face rows (Parquet)")
    no_face = pc.and_(pc.equal(table.column("face_index"), -1), pc.is_null(table.column("error")))
    return int(pc.sum(no_face).as_py() or 0)
