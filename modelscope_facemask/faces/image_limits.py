"""How an image limit is read from its environment variable, and Pillow's own pixel limit set aside while we decode.

The limits' defaults are module constants of :mod:`.images` (``MAX_IMAGE_PIXELS``, ``MAX_DOWNLOAD_BYTES``,
``URL_DEADLINE_SECONDS``), read there on every call so that setting them there takes effect; the error messages name
them by that path.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator

from PIL import Image

from ..errors import ConfigurationError

ENV_MAX_IMAGE_PIXELS = "FACEMASK_MAX_IMAGE_PIXELS"
ENV_MAX_DOWNLOAD_BYTES = "FACEMASK_MAX_DOWNLOAD_BYTES"
ENV_URL_DEADLINE = "FACEMASK_URL_DEADLINE_S"


def env_limit(name: str, default: float, kind: Callable[[str], float]) -> float:
    """``$name`` parsed by ``kind`` when set and not blank, else ``default``; :class:`ConfigurationError` naming the
    variable when its value is not a positive number."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text.strip())
    except ValueError:
        value = 0
    if not value > 0:
        raise ConfigurationError(f"environment variable {name}={text!r} must be a positive number; fix or unset it")
    return value


_pillow_lock = threading.Lock()
_pillow_users = 0
_pillow_saved_limit: int | None = None


@contextlib.contextmanager
def own_pixel_limit() -> Iterator[None]:
    """Switch Pillow's global decompression-bomb check off while one of our decodes runs (ours applies instead)."""
    global _pillow_users, _pillow_saved_limit
    with _pillow_lock:
        if _pillow_users == 0:
            _pillow_saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pillow_users += 1
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_users -= 1
            if _pillow_users == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_saved_limit
