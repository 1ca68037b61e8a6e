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

Pieces: :mod:`.vector_inputs` (checks of the vectors and ids given), :mod:`.bf16_scan` (the ``bf16`` search method),
:mod:`.index_files` (FAISS itself and the index file); the index kinds, changes and searches are here.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ...errors import VectorInputError
from .bf16_scan import RESCORE_MARGIN, bf16_copy, bf16_search  # noqa: F401  (RESCORE_MARGIN re-exported)
from .index_files import faiss_module, read_index, write_index
from .vector_inputs import UNIT_TOLERANCE, check_ids, check_rows  # noqa: F401  (UNIT_TOLERANCE re-exported)

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", "hnsw")
SEARCH_METHODS = ("faiss", "bf16")
EXACT_MAX_VECTORS = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
_REMOVED = -1  # id-map entry of a tombstoned (removed) hnsw vector
_ADD_CHUNK = 65_536


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
        faiss = faiss_module()
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
        vectors = check_rows("vectors", vectors, None)
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
        vectors = check_rows("vectors", vectors, self.dim)
        ids = check_ids(ids, len(vectors))
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
        faiss = faiss_module()
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
        queries = check_rows("queries", queries, self.dim)
        k = int(k)
        if len(queries) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        if self._search_method == "bf16":
            return self._bf16_search(queries, k)
        faiss = faiss_module()
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
        stored = self._stored_vectors()
        if self._bf16_vectors is None:
            self._bf16_vectors = bf16_copy(stored)
        return bf16_search(queries, k, stored, self._bf16_vectors, self._id_map(), self._removed > 0)

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
        write_index(self._index, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by ``save``; IndexFileError if it is missing, corrupt or not such an index."""
        index, kind = read_index(path)
        return cls(index, kind)

    # ---- internals ------------------------------------------------------------------------------------------------
    def _id_map(self) -> np.ndarray:
        return faiss_module().vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def _graph(self) -> Any:
        return faiss_module().downcast_index(self._index.index)

    def _stored_vectors(self) -> np.ndarray:
        """A view (no copy) of all stored float32 vectors, tombstoned ones included; valid until the next change."""
        faiss = faiss_module()
        flat = faiss.downcast_index(self._index.index if self.kind == "exact" else self._graph().storage)
        total = int(flat.ntotal)
        if total == 0:
            return np.empty((0, self.dim), np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), total * self.dim).reshape(total, self.dim)


def faiss_vectors(flat_index: Any, dim: int) -> np.ndarray:
    """The float32 (ntotal, dim) vectors stored in a FAISS flat index (a copy)."""
    faiss = faiss_module()
    codes = faiss.vector_to_array(faiss.downcast_index(flat_index).codes)
    return codes.view(np.float32).reshape(-1, dim).copy()
