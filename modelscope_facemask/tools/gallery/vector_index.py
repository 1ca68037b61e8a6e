"""Inner-product search over unit embeddings with caller-chosen int64 ids: exact FAISS search for small galleries,
HNSW above ``EXACT_MAX_VECTORS``; incremental add and remove; saved as one plain FAISS index file.

Kinds
    ``exact``  ``IndexIDMap2(IndexFlatIP)``: brute force, recall 1 by construction. Removal compacts the vectors.
    ``hnsw``   ``IndexIDMap(IndexHNSWFlat)`` (M=32, efConstruction=80, efSearch=256 by default): a graph index whose
               scores are still exact inner products (full float32 vectors are stored), so a threshold calibrated on
               exact scores applies unchanged. FAISS cannot delete from an HNSW graph, so ``remove`` is a tombstone:
               the id-map entry of a removed vector becomes -1 and every search excludes negative ids with an
               ``IDSelector`` inside the graph walk (no over-fetch needed, never returned). A removed vector keeps
               its memory and graph node until the index is rebuilt (``rebuilt()``).
    ``auto``   exact when the index is built with at most ``EXACT_MAX_VECTORS`` vectors, hnsw above. The choice is made
               at build time: an index grown past the limit by ``add`` stays exact (correct, slower) until
               ``rebuilt("auto")``.

Why HNSW rather than IVF (a one-off IVF-Flat sweep on the face-like data of benchmarks/gallery_scale.py, 200k
vectors of 20k identities, 10 images each): IVF reaches recall@1 >= 0.99 only with about 5 identities per inverted list
(nlist 4096: 0.975 at nprobe 1, 0.992 at nprobe 4); with 20 per list (nlist 1024) it was 0.76 at nprobe 8 and 0.93 at
nprobe 64. Face identities are spread evenly over the sphere, so coarse centroids carry little signal, and a 1M gallery
would need ~20,000 trained centroids (training 4096 already took minutes here). HNSW needs no training, adds
incrementally, and reached recall@1 1.0 at efSearch 64 on 100k vectors (benchmarks/gallery_scale.py). At 1M
vectors recall@1 was 0.69 / 0.81 / 0.91 / 0.94 at efSearch 64 / 128 / 256 / 512 (1000 queries in 0.49 / 0.86 /
1.60 / 3.04 s on an idle 2-core Xeon): hence the default 256 (identification rank-1 0.994 there); ``facemask identify
--ef-search`` trades further, and ``search_method='bf16'`` gives exact-or-nearly answers.

Search methods (``search_method``; the index file is the same for both)
    ``faiss``  FAISS's own search of the kind above (the default).
    ``bf16``   a brute-force scan of every stored vector in bfloat16 (torch matmul, 65,536 vectors at a time), keeping
               the best ``k + RESCORE_MARGIN`` per query, then those candidates re-scored in float32: the returned
               scores are exact inner products, and the top-k differs from exact search only where a true neighbour
               falls outside the candidates (bf16 rounds each score by up to ~0.004). Worth it on CPUs with bf16
               matrix hardware (AMX, avx512_bf16), where it runs at several times the fp32 rate; it also makes an
               hnsw gallery exact-or-nearly at brute-force cost. Measured on 1M face-like 512-d vectors, 2-core
               Xeon with AMX (benchmarks/results/gallery-scale-cpu-2026-12-01.json): 1,000 probes in 2.17 s
               against 3.58 s for FAISS's exact search, recall@1 1.0, one query 74 ms (FAISS 167 ms); the bf16
               matmul alone needs 1.2-1.4 s at that shape, the top-k selection most of the rest. Costs a bfloat16
               copy of the vectors (dim x 2 bytes each: 1 GiB per million 512-d vectors), made on the first such
               search (0.4-0.6 s at 1M).

Threads: FAISS uses OpenMP with ``OMP_NUM_THREADS`` (default: all cores), independent of ``torch.set_num_threads``.
A single hnsw query runs on one thread (HNSW parallelises over queries; a thread team only adds barrier waits, which
cost tens of milliseconds on a busy machine).
Not thread-safe: do not call ``add``/``remove`` while another thread searches.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...support.atomic_files import writing_file
from ...errors import IndexFileError, VectorInputError
from ...support.extras import require

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", "hnsw")
SEARCH_METHODS = ("faiss", "bf16")
RESCORE_MARGIN = 32  # bf16 scan: candidates kept per query beyond k, re-scored in float32
_SCAN_CHUNK = 65_536  # bf16 scan: stored vectors per matmul (bounds the (queries, chunk) score block)
_RESCORE_QUERIES = 1_024  # bf16 scan: queries re-scored at a time (bounds the (queries, k + margin, dim) gather)
EXACT_MAX_VECTORS = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
UNIT_TOLERANCE = 1e-3
_REMOVED = -1  # id-map entry of a tombstoned (removed) hnsw vector
_ADD_CHUNK = 65_536


def _faiss() -> Any:
    return require("faiss", "gallery", "the face gallery's vector index")


def _check_rows(name: str, array: Any, dim: int | None) -> np.ndarray:
    """``array`` as a C-contiguous float32 (n, dim) matrix of finite unit rows, or VectorInputError."""
    if not isinstance(array, np.ndarray):
        raise VectorInputError(f"{name} must be a numpy array of shape (n, dim), got {type(array).__name__}")
    if array.ndim != 2:
        hint = " (one vector: pass vector[None, :])" if array.ndim == 1 else ""
        raise VectorInputError(f"{name} must be 2-D (n, dim), got shape {array.shape}{hint}")
    if dim is not None and array.shape[1] != dim:
        raise VectorInputError(f"{name} has {array.shape[1]} columns but the index holds {dim}-d vectors")
    if array.shape[1] == 0:
        raise VectorInputError(f"{name} has shape {array.shape}: vectors need at least one dimension")
    if array.dtype != np.float32:
        raise VectorInputError(f"{name} must be float32, got {array.dtype}: pass {name}.astype(np.float32)")
    array = np.ascontiguousarray(array)
    for start in range(0, len(array), _ADD_CHUNK):  # chunked: no n-sized temporaries for a million rows
        chunk = array[start:start + _ADD_CHUNK]
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise VectorInputError(f"{name} row {row} holds NaN or Inf; only finite unit vectors can be indexed")
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        off = np.abs(norms - 1.0) > UNIT_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise VectorInputError(f"{name} row {start + row} has L2 norm {norms[row]:.6g}, not 1: inner-product "
                                   "search needs unit rows; divide each row by its norm")
    return array


def _check_ids(ids: Any, n: int) -> np.ndarray:
    """``ids`` as a contiguous int64 vector of ``n`` unique non-negative ids, or VectorInputError."""
    if not isinstance(ids, np.ndarray):
        raise VectorInputError(f"ids must be a numpy int64 array, got {type(ids).__name__}")
    if ids.ndim != 1 or len(ids) != n:
        raise VectorInputError(f"ids must have shape ({n},) (one per vector), got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise VectorInputError(f"ids must be integers (int64), got {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if n and ids.min() < 0:
        raise VectorInputError(f"ids must be >= 0, got {int(ids.min())} (negative ids mean 'no result' in searches)")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != n:
        raise VectorInputError(f"ids must be unique, {int(unique[counts > 1][0])} appears {int(counts.max())} times")
    return ids


def _check_kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise VectorInputError(f"index kind {kind!r} is not one of {', '.join(INDEX_KINDS)}")
    return kind


class VectorIndex:
    """Inner-product top-k search over float32 unit vectors, each under a caller-chosen int64 id."""

    def __init__(self, index: Any, kind: str) -> None:
        """Wrap a FAISS ``IndexIDMap2(IndexFlatIP)`` (``kind='exact'``) or ``IndexIDMap(IndexHNSWFlat)`` ('hnsw');
        use ``build`` or ``load`` rather than calling this."""
        self._index = index
        self.kind = kind
        self.dim = int(index.d)
        self._removed = int(np.count_nonzero(self._id_map() < 0)) if kind == "hnsw" else 0
        self._search_method = "faiss"
        self._bf16_vectors: Any = None  # torch bfloat16 copy of the stored vectors, made by the first bf16 search

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int, kind: str) -> "VectorIndex":
        """An empty index of ``dim``-d vectors; ``kind`` is "exact" or "hnsw" ("auto" gives exact)."""
        faiss = _faiss()
        kind = "exact" if _check_kind(kind) == "auto" else kind
        if kind == "exact":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            graph.hnsw.efSearch = HNSW_EF_SEARCH
            index = faiss.IndexIDMap(graph)
        return cls(index, kind)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, *, kind: str = "auto") -> "VectorIndex":
        """Index ``vectors`` (float32 (n, dim) unit rows) under ``ids`` (int64 (n,), unique). ``kind='auto'`` is
        exact up to ``EXACT_MAX_VECTORS`` vectors and hnsw above; "exact" or "hnsw" force one."""
        _check_kind(kind)
        vectors = _check_rows("vectors", vectors, None)
        if kind == "auto":
            kind = "exact" if len(vectors) <= EXACT_MAX_VECTORS else "hnsw"
        index = cls.empty(vectors.shape[1], kind)
        index.add(vectors, ids)
        return index

    def rebuilt(self, kind: str = "auto") -> "VectorIndex":
        """A new index of ``kind`` over this one's live vectors and ids (drops hnsw tombstones; no re-embedding)."""
        vectors, ids = self.vectors_and_ids()
        if len(vectors) == 0:
            return VectorIndex.empty(self.dim, kind)
        return VectorIndex.build(vectors, ids, kind=kind)

    # ---- changes --------------------------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add ``vectors`` under ``ids`` incrementally (no rebuild). Ids already in the index are refused (nothing
        is added); an id removed earlier may be used again."""
        vectors = _check_rows("vectors", vectors, self.dim)
        ids = _check_ids(ids, len(vectors))
        if len(ids) == 0:
            return
        present = np.isin(ids, self._id_map())
        if present.any():
            raise VectorInputError(f"id {int(ids[present][0])} is already in the index ({int(present.sum())} of the "
                                   "ids given are); remove it first or use new ids")
        self._bf16_vectors = None
        for start in range(0, len(ids), _ADD_CHUNK):
            self._index.add_with_ids(vectors[start:start + _ADD_CHUNK], ids[start:start + _ADD_CHUNK])

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors stored under ``ids`` (incremental, no rebuild); ids not in the index are ignored.
        Returns how many vectors were removed."""
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise VectorInputError(f"ids to remove must be a 1-D numpy integer array, got "
                                   f"{getattr(ids, 'shape', type(ids).__name__)} {getattr(ids, 'dtype', '')}")
        ids = np.unique(ids.astype(np.int64))
        ids = ids[ids >= 0]
        if len(ids) == 0:
            return 0
        faiss = _faiss()
        if self.kind == "exact":
            self._bf16_vectors = None  # removal compacts the stored vectors
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        id_map = self._id_map()
        hit = np.isin(id_map, ids)
        removed = int(hit.sum())
        if removed:
            id_map[hit] = _REMOVED
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._removed += removed
        return removed

    # ---- search ---------------------------------------------------------------------------------------------------
    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (higher: better recall, slower); None for an exact index."""
        return int(self._graph().hnsw.efSearch) if self.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise VectorInputError(f"ef_search applies to hnsw indexes only; this one is {self.kind}")
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise VectorInputError(f"ef_search must be a positive integer, got {value!r}")
        self._graph().hnsw.efSearch = int(value)

    @property
    def search_method(self) -> str:
        """How ``search`` runs: "faiss" (the default) or "bf16" (bf16 scan + float32 re-score; module docstring)."""
        return self._search_method

    @search_method.setter
    def search_method(self, value: str) -> None:
        if value not in SEARCH_METHODS:
            raise VectorInputError(f"search method {value!r} is not one of {', '.join(SEARCH_METHODS)}")
        if value == "bf16":
            from ...engines.precision import cpu_has_bf16

            if not cpu_has_bf16():
                logger.warning("bf16 gallery search on a CPU without bf16 hardware (no avx512_bf16/amx_bf16 flag): "
                               "it runs, but slower than the default search; use search method 'faiss'")
        self._search_method = value

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products of each query row: (scores float32 (q, k) descending, ids int64 (q, k)).
        Missing results (fewer than ``k`` vectors) are id -1 with score -inf. Runs as ``search_method`` says."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise VectorInputError(f"k must be a positive integer, got {k!r}")
        queries = _check_rows("queries", queries, self.dim)
        k = int(k)
        if len(queries) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        if self._search_method == "bf16":
            return self._bf16_search(queries, k)
        faiss = _faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(k, int(self._graph().hnsw.efSearch))
            if self._removed:
                keep = faiss.IDSelectorRange(0, np.iinfo(np.int64).max)  # tombstones are -1: never returned
                params.sel = keep
            if len(queries) == 1:  # HNSW parallelises over queries: a thread team only adds barrier waits
                default = faiss.omp_get_max_threads()  # (per calling thread in OpenMP: other threads unaffected)
                faiss.omp_set_num_threads(1)
                try:
                    scores, ids = self._index.search(queries, k, params=params)
                finally:
                    faiss.omp_set_num_threads(default)
            else:
                scores, ids = self._index.search(queries, k, params=params)
        else:
            scores, ids = self._index.search(queries, k)
        scores = np.asarray(scores, np.float32)
        ids = np.asarray(ids, np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _bf16_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` by a bfloat16 scan of all stored vectors and a float32 re-score of the best ``k + margin``."""
        import torch

        stored = self._stored_vectors()
        id_map = self._id_map()
        if self._bf16_vectors is None:
            self._bf16_vectors = torch.from_numpy(stored).to(torch.bfloat16)
        dead = torch.from_numpy(id_map < 0) if self._removed else None
        keep = min(k + RESCORE_MARGIN, len(stored))
        scan = torch.from_numpy(queries).to(torch.bfloat16)
        best_scores: list[Any] = []
        best_rows: list[Any] = []
        with torch.no_grad():
            for start in range(0, len(stored), _SCAN_CHUNK):
                block = scan @ self._bf16_vectors[start:start + _SCAN_CHUNK].T
                if dead is not None:
                    block[:, dead[start:start + _SCAN_CHUNK]] = -torch.inf
                values, rows = torch.topk(block, min(keep, block.shape[1]), dim=1)
                best_scores.append(values)
                best_rows.append(rows + start)
            merged, order = torch.topk(torch.cat(best_scores, 1).float(), keep, dim=1)
            candidates = torch.gather(torch.cat(best_rows, 1), 1, order).numpy()
        alive = np.isfinite(merged.numpy())
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(queries), _RESCORE_QUERIES):
            part = slice(start, start + _RESCORE_QUERIES)
            exact = np.einsum("qd,qkd->qk", queries[part], stored[candidates[part]])
            exact[~alive[part]] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(exact, order, axis=1)
            found = np.isfinite(top)
            width = top.shape[1]
            scores[part, :width] = top
            ids[part, :width] = np.where(found, id_map[np.take_along_axis(candidates[part], order, axis=1)], -1)
        return scores, ids

    # ---- inspection -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of live (searchable) vectors."""
        return int(self._index.ntotal) - self._removed

    @property
    def removed_count(self) -> int:
        """Tombstoned hnsw vectors still holding memory (0 for exact); ``rebuilt()`` drops them."""
        return self._removed

    def ids(self) -> np.ndarray:
        """The live ids, in storage order (int64)."""
        id_map = self._id_map()
        return id_map[id_map >= 0]

    def vectors_and_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live vectors (float32 (n, dim)) and their ids, in storage order."""
        id_map = self._id_map()
        inner = self._index.index if self.kind == "exact" else self._graph().storage
        vectors = faiss_vectors(inner, self.dim)
        live = id_map >= 0
        return vectors[live], id_map[live]

    def __repr__(self) -> str:
        extra = f", ef_search={self.ef_search}, removed={self._removed}" if self.kind == "hnsw" else ""
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)}{extra})"

    # ---- files ----------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index as one plain FAISS index file (``faiss.read_index`` reads it), atomically."""
        faiss = _faiss()
        with writing_file(path) as tmp:  # streamed by FAISS: no in-memory copy of a multi-GB index
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by ``save``; IndexFileError if it is missing, corrupt or not such an index."""
        faiss = _faiss()
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
        return cls._validated(index, path, fix)

    @classmethod
    def _validated(cls, index: Any, path: Path, fix: str) -> "VectorIndex":
        """Wrap a just-read FAISS index after checking that it is one this class writes."""
        faiss = _faiss()
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
        return cls(index, kind)

    # ---- internals ------------------------------------------------------------------------------------------------
    def _id_map(self) -> np.ndarray:
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def _graph(self) -> Any:
        return _faiss().downcast_index(self._index.index)

    def _stored_vectors(self) -> np.ndarray:
        """A view (no copy) of all stored float32 vectors, tombstoned ones included; valid until the next change."""
        faiss = _faiss()
        flat = faiss.downcast_index(self._index.index if self.kind == "exact" else self._graph().storage)
        total = int(flat.ntotal)
        if total == 0:
            return np.empty((0, self.dim), np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), total * self.dim).reshape(total, self.dim)


def faiss_vectors(flat_index: Any, dim: int) -> np.ndarray:
    """The float32 (ntotal, dim) vectors stored in a FAISS flat index (a copy)."""
    faiss = _faiss()
    codes = faiss.vector_to_array(faiss.downcast_index(flat_index).codes)
    return codes.view(np.float32).reshape(-1, dim).copy()
