"""FAISS for the vector index (the ``gallery`` extra), and the index file: written atomically, read back only when it
is one of the two kinds the index writes (exact ``IndexIDMap2(IndexFlatIP)`` or hnsw ``IndexIDMap(IndexHNSWFlat)``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import IndexFileError
from ...support.atomic_files import writing_file
from ...support.extras import require


def faiss_module() -> Any:
    """The ``faiss`` module, or MissingExtraError naming the ``gallery`` extra."""
    return require("faiss", "gallery", "the face gallery's vector index")


def write_index(index: Any, path: str | os.PathLike) -> None:
    """Write the FAISS ``index`` as one plain FAISS index file (``faiss.read_index`` reads it), atomically."""
    faiss = faiss_module()
    with writing_file(path) as tmp:  # streamed by FAISS: no in-memory copy of a multi-GB index
        faiss.write_index(index, str(tmp))


def read_index(path: str | os.PathLike) -> tuple[Any, str]:
    """The FAISS index in ``path`` and its kind ("exact" or "hnsw"); IndexFileError if it is missing, corrupt or not
    such an index."""
    faiss = faiss_module()
    path = Path(path)
    fix = "rebuild it (facemask gallery build)"
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise IndexFileError(f"vector index {str(path)!r} {state}; {fix}")
    try:
        with open(path, "rb"):  # a readable file: FAISS's own error for an unreadable one is vaguer
            pass
        index = faiss.read_index(str(path))  # streamed: no in-memory copy of a multi-GB file
    except OSError as error:
        raise IndexFileError(f"vector index {str(path)!r} cannot be read ({error.strerror or error}); {fix}") \
            from error
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise IndexFileError(f"vector index {str(path)!r} is not a readable FAISS index (truncated or corrupt: "
                             f"{first}); {fix}") from error
    return index, _checked_kind(index, path, fix)


def _checked_kind(index: Any, path: Path, fix: str) -> str:
    """The kind of a just-read FAISS index, after checking that it is one the vector index writes."""
    faiss = faiss_module()
    where = f"vector index {str(path)!r}"
    wrapped = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else None
    if isinstance(index, faiss.IndexIDMap2) and isinstance(wrapped, faiss.IndexFlat):
        kind, inner = "exact", wrapped
    elif isinstance(index, faiss.IndexIDMap) and isinstance(wrapped, faiss.IndexHNSWFlat):
        kind, inner = "hnsw", wrapped
    else:
        held = type(index).__name__ + (f"({type(wrapped).__name__})" if wrapped is not None else "")
        raise IndexFileError(f"{where} holds a {held}, not an exact (IndexIDMap2(IndexFlatIP)) or hnsw "
                             f"(IndexIDMap(IndexHNSWFlat)) index; {fix}")
    if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexFileError(f"{where} uses metric {inner.metric_type}, not inner product; {fix}")
    if index.d < 1 or inner.d != index.d:
        raise IndexFileError(f"{where} has inconsistent dimensions ({index.d} vs {inner.d}); {fix}")
    id_map = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    if len(id_map) != index.ntotal or inner.ntotal != index.ntotal:
        raise IndexFileError(f"{where} holds {inner.ntotal} vectors but {len(id_map)} ids; {fix}")
    live = id_map[id_map >= 0]
    if kind == "exact" and len(live) != len(id_map):
        raise IndexFileError(f"{where} holds negative ids in an exact index; {fix}")
    if len(np.unique(live)) != len(live):
        raise IndexFileError(f"{where} holds duplicate ids; {fix}")
    return kind
