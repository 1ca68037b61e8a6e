"""Batching on a Ray Serve replica: Ray Serve's ``@serve.batch`` gathers the concurrent requests' images (up to
``max_batch``, waiting at most ``max_wait_ms``), and the batch runs on the replica's one worker thread through the
same grouped ``pipeline.run_batch`` as :class:`~.batcher.DynamicBatcher`. Only inside a Ray Serve replica
(``@serve.batch`` needs the replica context)."""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from .batcher import BatchItem, DynamicBatcher, QueueFull


class RayServeBatcher(DynamicBatcher):
    """:class:`~.batcher.DynamicBatcher` with Ray Serve's ``@serve.batch`` as the collector."""

    def __init__(self, pipeline: Any, *, max_batch: int, max_wait_ms: float, queue_size: int,
                 on_batch: Any = None) -> None:
        from ray import serve

        super().__init__(pipeline, max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
                         on_batch=on_batch)
        self._waiting = 0

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1000.0)
        async def gathered(items: list[BatchItem]) -> list[list[Any]]:
            self._waiting -= len(items)
            return [[output] for output in await self.execute(items)]  # wrapped: an exception is a value here

        self._gathered = gathered

    @property
    def queue_depth(self) -> int:
        return self._waiting

    def start(self) -> None:
        """Nothing to start: ``@serve.batch`` runs its own collector."""

    async def stop(self) -> None:
        while self._waiting or self._running:
            await asyncio.sleep(0.01)
        self._worker.shutdown(wait=True)

    async def submit(self, images: list[np.ndarray], labels: list[str], **options: Any) -> list[dict[str, Any]]:
        if self._waiting + len(images) > self.queue_size:
            raise QueueFull(f"{self._waiting} images are waiting (queue size {self.queue_size})")
        key = tuple(sorted(options.items()))
        self._waiting += len(images)
        wrapped = await asyncio.gather(*(self._gathered(BatchItem(image, label, key, None))
                                         for image, label in zip(images, labels)))
        outputs = [output for (output,) in wrapped]
        for output in outputs:
            if isinstance(output, BaseException):
                raise output
        return outputs
