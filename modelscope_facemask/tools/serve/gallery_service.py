"""The gallery behind a server: identify against it while enrolments and deletions change it.

* **Writes** (enrol, delete) are serialised: an asyncio lock in this process, and the gallery's writer lock
  (``G/.facemask-gallery.lock``) against other processes. Each write loads the folder as it is on disk, changes that
  copy, saves it (a new generation, then the manifest switched atomically: a crash leaves the old gallery or the new
  one, never half of one), and only then swaps the reference identify reads. So an acknowledged write is on disk,
  and identify keeps answering from the previous gallery while a write runs.
* **Reads** notice another process's writes: before answering, the manifest's ``stat`` is compared with the one
  loaded, and on a change the folder is reloaded (:meth:`FaceGallery.is_current`).
* A ``--gallery`` folder that does not exist yet is created by the first enrolment; until then it is empty.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigurationError, GalleryIdentityError
from ..gallery.face_gallery import FaceGallery, GalleryModel, Identification
from ..gallery.gallery_folder import MANIFEST_FILE, folder_state, read_manifest
from ..gallery.writer_lock import holding_writer_lock
from .api_errors import ApiError


def upload_source(data: bytes) -> str:
    """How an uploaded photo is recorded as a gallery source: its SHA-256 (the same photo twice is one source)."""
    return "upload:sha256=" + hashlib.sha256(data).hexdigest()


class GalleryService:
    """One gallery folder, shared by the routes."""

    def __init__(self, path: str | os.PathLike, model: GalleryModel) -> None:
        self.path = Path(os.path.realpath(path))
        self.model = model
        self._gallery: FaceGallery | None = None
        self._seen: tuple | None = None
        self._reload = threading.Lock()
        self._write: asyncio.Lock | None = None
        state = folder_state(self.path)
        if state == "foreign":
            raise ConfigurationError(f"--gallery {str(path)!r} exists and is not a FaceMask gallery: give a gallery "
                                     "folder (`facemask gallery build`) or a path that does not exist yet")
        if state == "gallery":
            self._load()

    # ------------------------------------------------------------------ reading
    def _signature(self) -> tuple | None:
        try:
            info = os.stat(self.path / MANIFEST_FILE)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _load(self) -> None:
        signature = self._signature()
        gallery = FaceGallery.load(self.path)
        gallery.check_model(self.model)
        self._gallery, self._seen = gallery, signature

    def current(self) -> FaceGallery | None:
        """The gallery as on disk now (reloaded when another process changed it); None while empty."""
        if self._signature() != self._seen:
            with self._reload:
                if self._signature() != self._seen and folder_state(self.path) == "gallery":
                    gallery = self._gallery
                    if gallery is None or not gallery.is_current(self.path):
                        self._load()
                    else:
                        self._seen = self._signature()
        return self._gallery

    async def identify(self, embeddings: np.ndarray, *, top_k: int, threshold: float) -> list[Identification]:
        def search() -> list[Identification]:
            gallery = self.current()
            if gallery is None or not len(gallery):
                return [Identification(None, ()) for _ in range(len(embeddings))]
            return gallery.identify(embeddings, top_k=top_k, threshold=threshold)

        return await asyncio.to_thread(search)

    async def info(self) -> dict[str, Any]:
        gallery = await asyncio.to_thread(self.current)
        counts = gallery.image_counts() if gallery is not None else {}
        return {"path": str(self.path), "size": sum(counts.values()), "identity_count": len(counts),
                "identities": [{"identity": name, "images": n} for name, n in counts.items()],
                "dim": gallery.dim if gallery is not None else None,
                "index_kind": gallery.index.kind if gallery is not None else None, "model": self.model.model}

    # ------------------------------------------------------------------ writing
    def _lock(self) -> asyncio.Lock:
        if self._write is None:
            self._write = asyncio.Lock()
        return self._write

    async def enrol(self, identity: str, embeddings: np.ndarray, sources: list[str]) -> dict[str, Any]:
        """Add one embedding per source under ``identity`` (sources already enrolled are skipped)."""
        async with self._lock():
            return await asyncio.to_thread(self._enrol, identity, embeddings, sources)

    async def remove(self, identity: str) -> int:
        """Remove every image of ``identity``; 404 when it is not enrolled."""
        async with self._lock():
            return await asyncio.to_thread(self._remove, identity)

    def _enrol(self, identity: str, embeddings: np.ndarray, sources: list[str]) -> dict[str, Any]:
        self.path.mkdir(parents=True, exist_ok=True)
        with holding_writer_lock(self.path):
            exists = folder_state(self.path) == "gallery"
            gallery = FaceGallery.load(self.path) if exists else None
            if gallery is not None:
                gallery.check_model(self.model)
            known = gallery.enrolled_sources() if gallery is not None else set()
            fresh = [i for i, source in enumerate(sources) if source not in known]
            fresh = [i for n, i in enumerate(fresh) if sources[i] not in {sources[j] for j in fresh[:n]}]
            if fresh:
                rows, names = embeddings[fresh], [sources[i] for i in fresh]
                if gallery is None:
                    gallery = FaceGallery.build(rows, [identity] * len(fresh), names, model=self.model)
                else:
                    gallery.add(rows, [identity] * len(fresh), names)
                gallery.save(self.path, replace=exists)
                gallery.stored = read_manifest(self.path)
                self._gallery, self._seen = gallery, self._signature()
        size = len(gallery) if gallery is not None else 0
        return {"enrolled": len(fresh), "already_enrolled": len(sources) - len(fresh), "size": size}

    def _remove(self, identity: str) -> int:
        if folder_state(self.path) != "gallery":
            raise ApiError(404, "unknown_identity", f"identity {identity!r} is not in the gallery (it is empty)")
        with holding_writer_lock(self.path):
            gallery = FaceGallery.load(self.path)
            gallery.check_model(self.model)
            try:
                removed = gallery.remove([identity])
            except GalleryIdentityError:
                raise ApiError(404, "unknown_identity", f"identity {identity!r} is not in the gallery; GET "
                                                        "/v1/gallery lists the enrolled ones") from None
            gallery.save(self.path, replace=True)
            gallery.stored = read_manifest(self.path)
            self._gallery, self._seen = gallery, self._signature()
        return removed
