"""Load any supported image input into one convention: an RGB uint8 (H, W, 3) C-contiguous array.

Mirrors ModelScope's ``LoadImage.convert_to_ndarray``: paths, URLs and encoded bytes are opened with PIL,
EXIF-transposed (``ImageOps.exif_transpose``) and converted to RGB; PIL images are converted to RGB (no EXIF
transpose, as in ModelScope); numpy arrays are assumed **BGR** (2-D gray is expanded, a 4th alpha channel dropped);
a dict is read through its ``'image'`` key.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageLoadError

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray, dict]

URL_TIMEOUT_SECONDS = 30.0
_MAX_LABEL_CHARS = 120


def describe_source(source: Any) -> str:
    """A short human label for ``source`` (for logs and error messages); never dumps array contents."""
    if isinstance(source, str):
        text = source if len(source) <= _MAX_LABEL_CHARS else source[: _MAX_LABEL_CHARS - 3] + "..."
        return repr(text)
    if isinstance(source, os.PathLike):
        return describe_source(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return f"<{type(source).__name__} of {len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL.Image mode={source.mode} size={source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<ndarray shape={tuple(source.shape)} dtype={source.dtype}>"
    if isinstance(source, dict):
        keys = ", ".join(repr(k) for k in list(source)[:5])
        inner = f", image={describe_source(source['image'])}" if "image" in source else ""
        return f"<dict keys=[{keys}]{inner}>"
    return f"<{type(source).__module__}.{type(source).__qualname__} object>"


def load_image(source: ImageSource) -> np.ndarray:
    """Load ``source`` as an RGB uint8 (H, W, 3) C-contiguous array, pixel-identical to ModelScope's loader.

    Accepted: local path (str or ``os.PathLike``), http(s) URL, encoded image bytes, PIL image, BGR/gray/BGRA uint8
    ndarray, or ``{'image': <any of these>}``. Raises ``ImageLoadError`` naming the input otherwise.
    """
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            return decode_image_bytes(_download(source), label=describe_source(source))
        return decode_image_bytes(_read_file(source), label=describe_source(source))
    if isinstance(source, os.PathLike):
        return load_image(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return decode_image_bytes(bytes(source), label=describe_source(source))
    if isinstance(source, Image.Image):
        return np.ascontiguousarray(np.array(source.convert("RGB")))
    if isinstance(source, np.ndarray):
        return bgr_array_to_rgb(source)
    if isinstance(source, dict):
        if "image" not in source:
            raise ImageLoadError(
                f"image input {describe_source(source)} has no 'image' key; pass {{'image': <path, URL, bytes, "
                "PIL image or BGR array>}"
            )
        return load_image(source["image"])
    raise ImageLoadError(
        f"unsupported image input {describe_source(source)}; pass a local path, an http(s) URL, encoded image "
        "bytes, a PIL image, a BGR uint8 numpy array or {'image': ...}"
    )


def decode_image_bytes(data: bytes, label: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) like ModelScope: PIL open, EXIF transpose, RGB."""
    try:
        with io.BytesIO(data) as infile:
            img = Image.open(infile)
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... on bad data
        raise ImageLoadError(
            f"cannot decode image {label} ({type(exc).__name__}: {exc}); pass a valid JPEG/PNG/BMP/WebP file"
        ) from exc
    return np.ascontiguousarray(np.array(img))


def bgr_array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Convert a BGR (H, W, 3), BGRA (H, W, 4) or gray (H, W) / (H, W, 1) uint8 array to RGB (H, W, 3)."""
    label = describe_source(array)
    if array.dtype != np.uint8:
        raise ImageLoadError(
            f"image array {label} must have dtype uint8; convert with np.clip(a, 0, 255).astype(np.uint8)"
        )
    if array.size == 0:
        raise ImageLoadError(f"image array {label} is empty; pass an array with at least one pixel")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageLoadError(
            f"image array {label} must be (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA; reshape or convert it"
        )
    if array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    return np.ascontiguousarray(array[:, :, 2::-1])


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageLoadError(
            f"cannot read image file {describe_source(path)} ({type(exc).__name__}: {exc.strerror or exc}); "
            "check that the path exists and is readable"
        ) from exc


def _download(url: str) -> bytes:
    import requests

    try:
        response = requests.get(url, timeout=URL_TIMEOUT_SECONDS)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise ImageLoadError(
            f"cannot download image {describe_source(url)} ({type(exc).__name__}: {exc}); check the URL and "
            "network, or download it and pass the local path"
        ) from exc
    return response.content
