"""``FaceGallery``: enrolled face embeddings with identities, searched 1:N by inner product (FAISS).

* **Enrolment**: one embedding per image (its largest face). Images without a face or with an error are reported
  by the caller, never enrolled.
* **Search**: inner product of unit embeddings (= cosine similarity) against every enrolled image through
  :class:`~modelscope_facemask.tools.gallery.vector_index.VectorIndex` (exact up to ``EXACT_MAX_VECTORS`` images,
  approximate above, or as chosen). The top image hits are aggregated per identity:

  - ``best``: an identity's score is its best-matching image's score (the max over its images);
  - ``mean``: an identity's score is the cosine to its *mean template*, the L2-normalised mean of all its enrolled
    embeddings. The identities scored are those among the top image hits (a candidate set from the index).

  Enough image hits are fetched that ``top_k`` distinct identities come back (or every identity there is). Ties in
  score are broken by identity name (ascending), so results are deterministic.
* **Open set**: :meth:`FaceGallery.identify` answers the rank-1 identity when its score is >= the threshold, else
  "unknown" (``None``). :data:`DEFAULT_THRESHOLD` is an uncalibrated placeholder: calibrate it on your own probes
  with ``facemask evaluate --gallery G --probes SRC`` (it prints the thresholds for FPIR 1e-2 and 1e-3).
* **Model check**: a gallery records the recognizer's weights sha256 and the embedding-contract sha256 (the contract
  as for one face per image, ``max_faces=1``); :meth:`FaceGallery.check_model` refuses another model or contract
  with :class:`GalleryMismatchError`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import GalleryFormatError, GalleryIdentityError, GalleryMismatchError
from . import DEFAULT_THRESHOLD  # the package defines it: `facemask identify --help` shows it without numpy
from .gallery_folder import (GalleryManifest, GalleryRows, read_gallery_folder, read_manifest,
                             write_gallery_folder)

AGGREGATIONS = ("best", "mean")
#: image hits fetched per wanted identity before aggregation (doubled until ``top_k`` identities are found)
HITS_PER_IDENTITY = 10
MIN_HITS = 50
_TEMPLATE_CHUNK = 65_536


def gallery_contract(contract: Mapping[str, Any]) -> dict[str, Any]:
    """The embedding contract as a gallery records it: one face per image (``max_faces=1``), whatever the run used."""
    return {**contract, "max_faces": 1}


@dataclass(frozen=True)
class GalleryModel:
    """What made a gallery's embeddings: the model name, the recognizer weights sha256 and the contract sha256."""

    model: str
    recognizer_sha256: str
    contract_sha256: str
    contract: dict[str, Any]
    detector_sha256: str | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], model: str | None = None) -> "GalleryModel":
        """From run metadata (``regress.run_metadata``, ``facemask embed``'s or face rows' metadata)."""
        from ..regress import contract_sha256

        try:
            weights = metadata["weights"]
            recognizer = weights["recognizer"]["sha256"]
            contract = gallery_contract(metadata["contract"])
        except (KeyError, TypeError):
            raise GalleryFormatError("the embeddings' metadata has no recognizer weights sha256 or embedding "
                                     "contract: embed them with this package (`facemask embed --ray`)") from None
        detector = (weights.get("detector") or {}).get("sha256")
        return cls(model if model is not None else str(metadata.get("model", "")), recognizer,
                   contract_sha256(contract), contract, detector)

    @classmethod
    def of_pipeline(cls, pipeline: Any, model: str) -> "GalleryModel":
        """Of a loaded FaceMask pipeline (hashes its weights files)."""
        from ..regress import run_metadata

        return cls.from_metadata(run_metadata(pipeline, 1), model)

    def to_manifest(self) -> dict[str, Any]:
        return {"model": self.model, "recognizer_sha256": self.recognizer_sha256,
                "detector_sha256": self.detector_sha256, "contract_sha256": self.contract_sha256,
                "contract": self.contract}

    @classmethod
    def from_manifest(cls, manifest: GalleryManifest) -> "GalleryModel":
        """Of a gallery's (already checked) manifest."""
        return cls(manifest.model, manifest.recognizer_sha256, manifest.contract_sha256, dict(manifest.contract),
                   manifest.detector_sha256)


@dataclass(frozen=True)
class Candidate:
    """One identity in a search result: its aggregated score and its best-matching enrolled image."""

    identity: str
    score: float
    source: str
    image_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "score": self.score, "source": self.source, "image_id": self.image_id}


@dataclass(frozen=True)
class Identification:
    """The open-set answer for one face: ``identity`` (None = unknown) and the ranked candidates."""

    identity: str | None
    candidates: tuple[Candidate, ...]


def _unit_rows(vectors: Any, dim: int | None, what: str) -> np.ndarray:
    array = np.asarray(vectors, np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        raise ValueError(f"{what} must be a (n, {dim or 'dim'}) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or Inf")
    norms = np.linalg.norm(array, axis=1)
    if len(norms) and np.abs(norms - 1.0).max() > 1e-3:
        raise ValueError(f"{what} must be unit vectors (L2 norms {norms.min():.4f}..{norms.max():.4f}); FaceMask "
                         "embeddings are")
    return np.ascontiguousarray(array)


def _labels(values: Sequence[str], n: int, what: str) -> np.ndarray:
    labels = np.array([str(v) for v in values], dtype=object)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} {what} for {n} embeddings")
    if any(not v.strip() for v in labels):
        raise ValueError(f"empty {what[:-1] if what.endswith('s') else what}")
    return labels


class FaceGallery:
    """Enrolled embeddings (one per image) with their identities and sources, and a vector index over them."""

    def __init__(self, index: Any, rows: GalleryRows, model: GalleryModel, *, next_id: int,
                 created: str | None = None, created_by: str | None = None) -> None:
        self.index = index
        self.rows = rows
        self.model = model
        self.next_id = int(next_id)
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.created_by = created_by or _version()
        self._templates: tuple[np.ndarray, np.ndarray] | None = None
        self.stored: GalleryManifest | None = None  # the manifest this gallery was loaded from (None: built)

    # ------------------------------------------------------------------ construction and changes
    @classmethod
    def build(cls, embeddings: Any, identities: Sequence[str], sources: Sequence[str], *, model: GalleryModel,
              keys: Sequence[str] | None = None, kind: str = "auto") -> "FaceGallery":
        """A new gallery of unit ``embeddings`` (n, dim) with their identities and sources; ``kind`` as
        ``VectorIndex.build`` takes it ("auto", "exact" or the approximate kind)."""
        from .vector_index import VectorIndex

        vectors = _unit_rows(embeddings, None, "embeddings")
        n = len(vectors)
        if n == 0:
            raise ValueError("a gallery needs at least one enrolled embedding")
        ids = np.arange(n, dtype=np.int64)
        rows = GalleryRows(ids, _labels(identities, n, "identities"), _labels(sources, n, "sources"),
                           _labels(keys if keys is not None else sources, n, "keys"), vectors)
        return cls(VectorIndex.build(vectors, ids, kind=kind), rows, model, next_id=n)

    def add(self, embeddings: Any, identities: Sequence[str], sources: Sequence[str],
            keys: Sequence[str] | None = None) -> np.ndarray:
        """Enrol more images (new or existing identities) without rebuilding the index; returns their row ids."""
        vectors = _unit_rows(embeddings, self.dim, "embeddings")
        n = len(vectors)
        identities_, sources_ = _labels(identities, n, "identities"), _labels(sources, n, "sources")
        keys_ = _labels(keys if keys is not None else sources, n, "keys")
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        if n:
            self.index.add(vectors, ids)
            self.rows = GalleryRows(np.r_[self.rows.ids, ids], np.r_[self.rows.identities, identities_],
                                    np.r_[self.rows.sources, sources_], np.r_[self.rows.keys, keys_],
                                    np.concatenate([self.rows.embeddings, vectors]))
            self.next_id += n
            self._templates = None
        return ids

    def remove(self, identities: Sequence[str]) -> int:
        """Remove every image of ``identities`` without rebuilding the index; returns how many images went.
        An identity that is not enrolled raises :class:`GalleryIdentityError` and nothing changes."""
        wanted = list(dict.fromkeys(str(i) for i in identities))
        known = set(self.rows.identities.tolist())
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise GalleryIdentityError(f"not in the gallery: {', '.join(repr(i) for i in unknown)}; nothing was "
                                       "removed (`facemask gallery info G --identities` lists the enrolled ones)")
        drop = np.isin(self.rows.identities, np.array(wanted, dtype=object))
        removed = self.index.remove(self.rows.ids[drop])
        if removed != int(drop.sum()):
            raise GalleryFormatError(f"the index held {removed} of the {int(drop.sum())} images to remove: the "
                                     "gallery's index and table disagree; rebuild it")
        keep = ~drop
        self.rows = GalleryRows(self.rows.ids[keep], self.rows.identities[keep], self.rows.sources[keep],
                                self.rows.keys[keep], self.rows.embeddings[keep])
        self._templates = None
        return int(drop.sum())

    # ------------------------------------------------------------------ facts
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return int(self.rows.embeddings.shape[1])

    def identities(self) -> list[str]:
        """The enrolled identities, sorted."""
        return sorted(set(self.rows.identities.tolist()))

    def image_counts(self) -> dict[str, int]:
        """Images per identity."""
        names, counts = np.unique(self.rows.identities.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def enrolled_sources(self) -> set[str]:
        """The sources of every enrolled image, as stored."""
        return set(self.rows.sources.tolist())

    def enrolled_photos(self, sources: Sequence[str]) -> list[bool]:
        """Per source in ``sources``: whether that photo is already enrolled, compared by resolved path (a URL as
        given), so that a gallery that stored ``enrol/a.jpg`` knows ``/abs/enrol/a.jpg``."""
        from ..corpus.face_rows import source_keys

        enrolled = set(source_keys(self.rows.sources.tolist()))
        return [key in enrolled for key in source_keys(list(sources))]

    def check_model(self, other: GalleryModel) -> None:
        """Raise :class:`GalleryMismatchError` unless ``other`` has this gallery's recognizer and contract."""
        mine = self.model
        problems = []
        if other.recognizer_sha256 != mine.recognizer_sha256:
            problems.append(f"recognizer weights sha256 {other.recognizer_sha256[:16]}... (gallery: "
                            f"{mine.recognizer_sha256[:16]}...)")
        if other.contract_sha256 != mine.contract_sha256:
            changed = sorted(k for k in set(mine.contract) | set(other.contract)
                             if mine.contract.get(k) != other.contract.get(k))
            problems.append(f"embedding contract sha256 {other.contract_sha256[:16]}... (gallery: "
                            f"{mine.contract_sha256[:16]}...; differs in {', '.join(changed) or 'its hash'})")
        if problems:
            raise GalleryMismatchError(
                f"the gallery (built with model {mine.model!r}) does not match these embeddings (model "
                f"{other.model!r}): {'; '.join(problems)}. Scores between them would be meaningless: use the "
                "gallery's model and settings (--model, --detector, --det-max-side as when it was built), or rebuild "
                "the gallery with this model (`facemask gallery build SRC --out G --model M`)")

    # ------------------------------------------------------------------ search
    def _mean_templates(self) -> tuple[np.ndarray, np.ndarray]:
        """(identity names sorted, unit mean templates (m, dim)): per identity, the L2-normalised mean of its
        enrolled embeddings (summed in float64, a chunk of rows at a time: bounded memory for large galleries)."""
        if self._templates is None:
            names, inverse = np.unique(self.rows.identities.astype(str), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            sums = np.zeros((len(names), self.dim), np.float64)
            for start in range(0, len(order), _TEMPLATE_CHUNK):
                rows = order[start : start + _TEMPLATE_CHUNK]
                owners = inverse[rows]  # sorted: one run per identity
                starts = np.r_[0, np.flatnonzero(np.diff(owners)) + 1]
                sums[owners[starts]] += np.add.reduceat(self.rows.embeddings[rows], starts, axis=0, dtype=np.float64)
            sums /= np.linalg.norm(sums, axis=1, keepdims=True).clip(min=1e-12)
            self._templates = (names, sums)
        return self._templates

    def search(self, queries: Any, *, top_k: int = 5, aggregate: str = "best") -> list[list[Candidate]]:
        """The ``top_k`` identities for each unit query embedding (rows of ``queries``), best first."""
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        queries = _unit_rows(queries, self.dim, "queries")
        results: list[list[Candidate]] = [[] for _ in range(len(queries))]
        n = len(self)
        if n == 0 or len(queries) == 0:
            return results
        want = min(top_k, len(self.identities()))
        pending = np.arange(len(queries))
        fetch = min(n, max(MIN_HITS, HITS_PER_IDENTITY * top_k))
        while len(pending):
            scores, ids = self.index.search(queries[pending], fetch)
            still = []
            for q, row_scores, row_ids in zip(pending, scores, ids):
                hits = self._best_per_identity(row_scores, row_ids)
                if len(hits) < want and fetch < n:
                    still.append(q)
                    continue
                results[q] = self._rank(queries[q], hits, top_k, aggregate)
            pending = np.array(still, dtype=np.int64)
            fetch = min(n, fetch * 4)
        return results

    def _best_per_identity(self, scores: np.ndarray, ids: np.ndarray) -> dict[str, tuple[float, int]]:
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        positions = np.searchsorted(self.rows.ids, ids)
        positions = np.minimum(positions, len(self.rows.ids) - 1)
        found = self.rows.ids[positions] == ids
        best: dict[str, tuple[float, int]] = {}
        for score, position in zip(scores[found], positions[found]):  # scores descending: the first hit is the best
            identity = self.rows.identities[position]
            if identity not in best:
                best[identity] = (float(score), int(position))
        return best

    def _rank(self, query: np.ndarray, hits: dict[str, tuple[float, int]], top_k: int,
              aggregate: str) -> list[Candidate]:
        if aggregate == "mean":
            names, templates = self._mean_templates()
            where = np.searchsorted(names, list(hits))
            scores = templates[where] @ query.astype(np.float64)
            scored = {name: (float(s), hits[name][1]) for name, s in zip(hits, scores)}
        else:
            scored = hits
        order = sorted(scored, key=lambda name: (-scored[name][0], name))[:top_k]
        return [Candidate(name, scored[name][0], str(self.rows.sources[scored[name][1]]),
                          int(self.rows.ids[scored[name][1]])) for name in order]

    def identify(self, queries: Any, *, top_k: int = 5, threshold: float = DEFAULT_THRESHOLD,
                 aggregate: str = "best") -> list[Identification]:
        """Open-set answers: the rank-1 identity when its score is >= ``threshold``, else None ("unknown")."""
        answers = []
        for candidates in self.search(queries, top_k=top_k, aggregate=aggregate):
            known = bool(candidates) and candidates[0].score >= threshold
            answers.append(Identification(candidates[0].identity if known else None, tuple(candidates)))
        return answers

    # ------------------------------------------------------------------ disk
    def manifest(self) -> dict[str, Any]:
        """What ``manifest.json`` records (without the files section)."""
        return {"created": self.created, "created_by": self.created_by, "written_by": _version(),
                **self.model.to_manifest(), "embedding_dim": self.dim, "index_kind": self.index.kind,
                "counts": {"images": len(self), "identities": len(self.identities())}, "next_id": self.next_id}

    def save(self, path: str | os.PathLike, *, replace: bool = False) -> Path:
        """Write the gallery folder (a new generation, then the manifest switched to it; ``replace``: overwrite an
        existing gallery). Takes the gallery's writer lock; hold :func:`~.gallery_folder.writer_lock` around a
        load-change-save so that concurrent writers keep each other's changes."""
        write_gallery_folder(path, self.index, self.rows, self.manifest(), replace=replace)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceGallery":
        """Read a gallery folder (every file checked against its manifest)."""
        index, rows, manifest = read_gallery_folder(path)
        gallery = cls(index, rows, GalleryModel.from_manifest(manifest), next_id=manifest.next_id,
                      created=manifest.created, created_by=manifest.created_by)
        gallery.stored = manifest
        return gallery

    def is_current(self, path: str | os.PathLike) -> bool:
        """True when gallery folder ``path`` still holds what this gallery was loaded from (same manifest)."""
        try:
            return self.stored is not None and read_manifest(path) == self.stored
        except GalleryFormatError:
            return False


def _version() -> str:
    from ...version import __version__

    return f"modelscope-facemask {__version__}"
