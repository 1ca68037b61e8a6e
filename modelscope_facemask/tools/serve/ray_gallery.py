"""The gallery of a Ray Serve deployment: every replica reads the shared gallery folder (reloading when it changes,
as :class:`~.gallery_service.GalleryService` does) and sends enrolments and deletions to one writer, the
``FaceMaskGalleryWriter`` deployment (one replica). Replicas compute the embeddings; only the writer changes the
folder, so the folder needs to be writable on the writer's node only."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..gallery.face_gallery import GalleryModel
from .api_errors import ApiError
from .gallery_service import GalleryService


class GalleryWriter:
    """The one writer (body of the writer deployment): a :class:`GalleryService` opened with the model of the
    first replica that writes; a replica whose model differs is refused by the service's model check."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self._service: GalleryService | None = None

    def _open(self, model: GalleryModel) -> GalleryService:
        if self._service is None or self._service.model != model:
            self._service = GalleryService(self.path, model)
        return self._service

    async def enrol(self, model: GalleryModel, identity: str, embeddings: np.ndarray,
                    sources: list[str]) -> dict[str, Any]:
        """:meth:`GalleryService.enrol`; an :class:`ApiError` comes back as ``{"api_error": ...}``."""
        try:
            return await self._open(model).enrol(identity, embeddings, sources)
        except ApiError as exc:
            return {"api_error": [exc.status, exc.code, exc.message]}

    async def remove(self, model: GalleryModel, identity: str) -> dict[str, Any]:
        try:
            return {"removed": await self._open(model).remove(identity)}
        except ApiError as exc:
            return {"api_error": [exc.status, exc.code, exc.message]}


class RemoteGalleryService(GalleryService):
    """A replica's view: reads from the folder, writes through ``writer`` (a handle to the writer deployment)."""

    def __init__(self, path: str | os.PathLike, model: GalleryModel, writer: Any) -> None:
        super().__init__(path, model)
        self._writer = writer

    @staticmethod
    def _answer(result: dict[str, Any]) -> dict[str, Any]:
        if "api_error" in result:
            status, code, message = result["api_error"]
            raise ApiError(status, code, message)
        return result

    async def enrol(self, identity: str, embeddings: np.ndarray, sources: list[str]) -> dict[str, Any]:
        return self._answer(await self._writer.enrol.remote(self.model, identity, embeddings, sources))

    async def remove(self, identity: str) -> int:
        return self._answer(await self._writer.remove.remote(self.model, identity))["removed"]
