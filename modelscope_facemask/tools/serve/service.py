"""What every route of one server shares (``app.state.facemask``): the settings, the pipeline behind the batcher,
the image decoder, the metrics, the API keys, the gallery service, and whether the model is warmed up."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from starlette.requests import Request

from .api_errors import ApiError
from .auth import ApiKeys, check_access
from .batcher import DynamicBatcher, QueueFull
from .metrics import ServeMetrics
from .request_body import ImageDecoder
from .settings import ServeSettings


class ServeState:
    """The shared state of one app."""

    def __init__(self, settings: ServeSettings, pipeline: Any, gallery: Any = None,
                 make_batcher: Callable[..., DynamicBatcher] = DynamicBatcher) -> None:
        self.settings, self.pipeline, self.gallery = settings, pipeline, gallery
        self.batcher = make_batcher(pipeline, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                                      queue_size=settings.queue_size)
        self.metrics = ServeMetrics(self.batcher, settings.max_batch)
        self.batcher.on_batch = self.metrics.on_batch
        self.decoder = ImageDecoder(settings)
        self.keys = ApiKeys.read(settings.api_key_file) if settings.api_key_file else None
        self.ready = False

    def require(self, request: Request, needs: str) -> None:
        """401/403 unless the request's key may do this (``needs``: ``read`` or ``write``)."""
        check_access(self.keys, request.headers, request.url.path, needs)

    def require_ready(self) -> None:
        if not self.ready:
            raise ApiError(503, "not_ready", "the model is still loading or warming up; retry when GET /readyz "
                                             "answers 200", {"Retry-After": "1"})

    async def run(self, images: list[np.ndarray], labels: list[str], **options: Any) -> list[dict[str, Any]]:
        """The pipeline outputs of ``images`` through the batcher; a full queue is 503 with ``Retry-After``."""
        self.require_ready()
        if not images:
            return []
        try:
            return await self.batcher.submit(images, labels, **options)
        except QueueFull as exc:
            raise ApiError(503, "queue_full", f"the server is at capacity ({exc}); retry after a second",
                           {"Retry-After": "1"}) from None

    def warm_up(self) -> None:
        """One detection and one recognizer pass on a synthetic picture (on the batch worker)."""
        picture = np.full((160, 160, 3), 128, np.uint8)
        self.pipeline.run_batch(["warm-up"], loaded=[picture])
        self.pipeline.run_batch(["warm-up"], loaded=[picture], use_det=False)


def state_of(request: Request) -> ServeState:
    return request.app.state.facemask
