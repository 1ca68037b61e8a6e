"""Prometheus metrics of one server, in a registry of its own (never the process-wide one): requests by route and
status, request latency, batch sizes, the pipeline's time per batch, queue depth and faces processed.
:class:`MetricsMiddleware` counts every
HTTP request under its route's path template (``/v1/gallery/identities/{identity}``; ``unmatched`` for unknown
paths, so that scanners cannot grow the label set)."""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def batch_buckets(max_batch: int) -> tuple[float, ...]:
    """One bucket per batch size 1..max_batch: the sizes are exact (mean and max per interval from two scrapes)."""
    return tuple(float(n) for n in range(1, max_batch + 1))


class ServeMetrics:
    """The metrics of one app."""

    def __init__(self, batcher: Any, max_batch: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("facemask_requests_total", "HTTP requests answered, by route, method and status",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("facemask_request_duration_seconds", "Time from request start to response end",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("facemask_batch_size", "Images per pipeline batch (one bucket per size)",
                                    buckets=batch_buckets(max_batch), registry=self.registry)
        self.batch_seconds = Histogram("facemask_batch_duration_seconds", "Time the pipeline took per batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.faces = Counter("facemask_faces_processed_total", "Faces detected and embedded",
                             registry=self.registry)
        self.images = Counter("facemask_images_processed_total", "Images run through the pipeline",
                              registry=self.registry)
        depth = Gauge("facemask_queue_depth", "Images waiting for a batch", registry=self.registry)
        depth.set_function(lambda: batcher.queue_depth)
        running = Gauge("facemask_batch_in_flight", "Images in the batch running now", registry=self.registry)
        running.set_function(lambda: batcher.in_flight)

    def on_batch(self, size: int, faces: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images.inc(size)
        self.faces.inc(faces)

    def text(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: one count and one latency observation per HTTP request."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
