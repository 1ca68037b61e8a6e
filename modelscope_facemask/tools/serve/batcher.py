"""Dynamic batching: concurrent requests' images gathered into one batch for the pipeline's batched path.

Requests put decoded images on an asyncio queue (:meth:`DynamicBatcher.submit`, bounded: a full queue raises
:class:`QueueFull`, answered 503 with ``Retry-After``). One collector task takes the first waiting image, then
gathers more, up to ``max_batch``, for at most ``max_wait_ms`` -- and waits only while other requests are still
arriving (:meth:`arriving`: being received or decoded), or while the server is saturated (images were still
queued when the last batch ended: the clients it just answered are likely sending again, and merging them keeps
batches full instead of splitting the load into two half batches that take turns), so a lone client is never
delayed. The batch runs on the
one worker thread (``pipeline.run_batch(labels, loaded=images, **options)``, grouped by per-call options); the
event loop never waits on it. Each image's future gets its own output: an image that fails fails only its request.
While the worker runs, new images queue up and form the next batch.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

class QueueFull(Exception):
    """The batch queue holds ``queue_size`` images already."""


@dataclass
class BatchItem:
    image: np.ndarray
    label: str
    options: tuple[tuple[str, Any], ...]
    future: asyncio.Future | None  # None when Ray Serve's @serve.batch gathers (ray_batcher.py)


@dataclass
class BatchStats:
    """What the batcher did: batches run, images per batch (histogram counts), images and faces processed."""

    batches: int = 0
    images: int = 0
    faces: int = 0
    max_batch_seen: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int, faces: int) -> None:
        self.batches += 1
        self.images += size
        self.faces += faces
        self.max_batch_seen = max(self.max_batch_seen, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class DynamicBatcher:
    """Gathers images into batches for ``pipeline``; start with :meth:`start` on the serving loop, stop with
    :meth:`stop` (waits for every queued image)."""

    def __init__(self, pipeline: Any, *, max_batch: int, max_wait_ms: float, queue_size: int,
                 on_batch: Any = None) -> None:
        self.pipeline = pipeline
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_ms / 1000.0, queue_size
        self.stats = BatchStats()
        self.on_batch = on_batch  # called (size, faces, seconds) after each batch, on the loop
        self._queue: asyncio.Queue[BatchItem] | None = None
        self._task: asyncio.Task | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facemask-batch")
        self._arriving = 0
        self._running = 0
        self._saturated = False  # images were waiting when the last batch ended

    # ------------------------------------------------------------------ facts
    @property
    def queue_depth(self) -> int:
        """Images waiting for a batch (not counting the batch running)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def in_flight(self) -> int:
        """Images in the batch running now."""
        return self._running

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="facemask-batcher")

    async def stop(self) -> None:
        """Finish every queued image, then stop the collector and the worker."""
        if self._queue is not None:
            while self._queue.qsize() or self._running:
                await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._worker.shutdown(wait=True)

    def run_now(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread (e.g. the warm-up): awaitable."""
        return asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # ------------------------------------------------------------------ requests
    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (body being read, images decoded): batches wait for it up to max_wait."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, images: list[np.ndarray], labels: list[str], **options: Any) -> list[dict[str, Any]]:
        """The pipeline's output for each image (``error`` key for one that failed), run in shared batches."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self._queue.qsize() + len(images) > self.queue_size:
            raise QueueFull(f"{self._queue.qsize()} images are waiting (queue size {self.queue_size})")
        loop = asyncio.get_running_loop()
        key = tuple(sorted(options.items()))
        futures = []
        for image, label in zip(images, labels):
            future = loop.create_future()
            self._queue.put_nowait(BatchItem(image, label, key, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    # ------------------------------------------------------------------ the collector
    async def _collect(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not (self._arriving or self._saturated):
                    break
                await asyncio.sleep(min(left, 0.0005))
            live = [item for item in batch if not item.future.done()]  # a request that timed out is dropped
            if live:
                await self._run(live)

    async def _run(self, batch: list[BatchItem]) -> None:
        outputs = await self.execute(batch)
        for item, output in zip(batch, outputs):
            if item.future.done():
                continue
            if isinstance(output, BaseException):
                item.future.set_exception(output)
            else:
                item.future.set_result(output)

    async def execute(self, batch: list[BatchItem]) -> list[Any]:
        """Run one gathered batch on the worker thread and record it: an output or an exception per item."""
        self._running = len(batch)
        start = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._worker, self._run_groups, batch)
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed: every request hears it
            outputs = [exc] * len(batch)
        finally:
            self._running = 0
            self._saturated = self.queue_depth > 0
        seconds = time.perf_counter() - start
        faces = sum(len(output["scores"]) for output in outputs if isinstance(output, dict) and "error" not in output)
        self.stats.record(len(batch), faces)
        if self.on_batch is not None:
            self.on_batch(len(batch), faces, seconds)
        return outputs

    def _run_groups(self, batch: list[BatchItem]) -> list[Any]:
        """On the worker: the batch's images grouped by per-call options, each group in one ``run_batch``."""
        outputs: list[Any] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for slot, item in enumerate(batch):
            groups.setdefault(item.options, []).append(slot)
        for options, slots in groups.items():
            try:
                results = self.pipeline.run_batch([batch[s].label for s in slots],
                                                  loaded=[batch[s].image for s in slots], **dict(options))
            except Exception as exc:  # noqa: BLE001 - e.g. an option the pipeline refuses: this group only
                results = [exc] * len(slots)
            for slot, result in zip(slots, results):
                outputs[slot] = result
        return outputs
