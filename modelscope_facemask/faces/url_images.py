"""Downloading an image URL on a worker thread: streamed, within a size limit and a total deadline.

The limits are passed in by :mod:`.images`, which reads them (its module constants, or their environment variables);
the error messages name both.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from ..errors import ImageLoadError
from .image_limits import ENV_MAX_DOWNLOAD_BYTES, ENV_URL_DEADLINE
from .image_sources import describe_source

_DOWNLOAD_CHUNK = 64 * 1024


class _Download:
    """One URL fetched on a worker thread: streamed, size-limited, cancellable at the deadline."""

    def __init__(self, url: str, max_bytes: int, timeout: float) -> None:
        self.url, self.max_bytes, self.timeout = url, max_bytes, timeout
        self.label = describe_source(url)
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self.response: Any = None

    def run(self) -> None:
        try:
            self.data = self._fetch()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def _fetch(self) -> bytes | None:
        import requests

        try:
            with requests.get(self.url, stream=True, timeout=(self.timeout, self.timeout)) as response:
                self.response = response
                response.raise_for_status()
                self._check_size(response.headers.get("Content-Length", ""), announced=True)
                chunks, total = [], 0
                read = getattr(response.raw, "read1", None) or response.raw.read
                while not self.cancelled.is_set():
                    chunk = read(_DOWNLOAD_CHUNK, decode_content=True)
                    if not chunk:
                        return b"".join(chunks)
                    total += len(chunk)
                    self._check_size(str(total), announced=False)
                    chunks.append(chunk)
                return None
        except requests.RequestException as exc:
            raise ImageLoadError(
                f"cannot download image {self.label} ({type(exc).__name__}: {exc}); check the URL and network, "
                "or download it and pass the local path"
            ) from exc

    def _check_size(self, size: str, announced: bool) -> None:
        if size.strip().isdigit() and int(size) > self.max_bytes:
            what = f"announces {int(size):,} bytes" if announced else f"sent more than {self.max_bytes:,} bytes"
            raise ImageLoadError(
                f"image {self.label} {what}, over the download limit of {self.max_bytes:,} bytes; download it "
                f"yourself and pass the local path, or raise the limit with the environment variable "
                f"{ENV_MAX_DOWNLOAD_BYTES} or modelscope_facemask.faces.images.MAX_DOWNLOAD_BYTES"
            )

    def cancel(self) -> None:
        """Stop the worker: it checks the flag between reads; a blocked read is woken by shutting the socket."""
        self.cancelled.set()
        with contextlib.suppress(Exception):
            self.response.raw.connection.sock.shutdown(socket.SHUT_RDWR)


def download_image(url: str, max_bytes: int, deadline: float, timeout: float) -> bytes:
    """The body of ``url``: at most ``max_bytes`` bytes, within ``deadline`` seconds in all (connection, headers and
    body), ``timeout`` seconds per connect and read; :class:`ImageLoadError` otherwise."""
    job = _Download(url, max_bytes, timeout)
    worker = threading.Thread(target=job.run, name="facemask-download", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        job.cancel()
        raise ImageLoadError(
            f"downloading image {job.label} did not finish within {deadline:g} s; download it yourself and pass "
            f"the local path, or raise the deadline with the environment variable {ENV_URL_DEADLINE} or "
            "modelscope_facemask.faces.images.URL_DEADLINE_SECONDS"
        )
    if job.error is not None:
        raise job.error
    assert job.data is not None
    return job.data
