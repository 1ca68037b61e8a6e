"""``ServeSettings``: what ``facemask serve`` runs with (model, limits, batching, keys), one frozen dataclass.

Plain Python (no FastAPI, no numpy): the command line builds it while parsing stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

#: defaults of the limits (docs/serve.md, "Limits")
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 50.0
DEFAULT_QUEUE_SIZE = 128
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_TOP_K = 5
#: images of one request (``/v1/embed``, enrolment)
DEFAULT_MAX_IMAGES = 64


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one server. ``threshold`` None: the gallery package's uncalibrated placeholder."""

    model: str = ""
    detector: str | None = None
    gallery: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    precision: str | None = None
    engine: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    allow_urls: bool = False
    api_key_file: str | None = None
    threshold: float | None = None
    top_k: int = DEFAULT_TOP_K

    def __post_init__(self) -> None:
        from ...errors import ConfigurationError

        for name in ("max_batch", "queue_size", "max_body_bytes", "max_pixels", "max_images", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"ServeSettings.{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "request_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf") or \
                    (name == "request_timeout_s" and value == 0):
                raise ConfigurationError(f"ServeSettings.{name} must be a finite number > 0 (max_wait_ms >= 0), "
                                         f"got {value!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigurationError(f"ServeSettings.threshold must be a cosine similarity in [-1, 1], got "
                                     f"{self.threshold!r}")

    @property
    def decision_threshold(self) -> float:
        """``threshold``, or the gallery package's default placeholder."""
        from ..gallery import DEFAULT_THRESHOLD

        return DEFAULT_THRESHOLD if self.threshold is None else float(self.threshold)
