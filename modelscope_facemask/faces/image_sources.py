"""Naming an image input in logs and error messages, and listing the image files of a folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FaceMaskError, ImageLoadError

_MAX_LABEL_CHARS = 120

#: The file name suffixes (lower case) that make a folder entry an image input.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


# ---------------------------------------------------------------------------------------------------- labels
def describe_source(source: Any, _depth: int = 0) -> str:
    """A short human label for ``source`` (for logs and error messages); never dumps array contents."""
    try:
        return _describe(source, _depth)
    except Exception:  # a label must never fail (odd subclasses, self-referencing containers, ...)
        return f"<{type(source).__qualname__} object>"


def _describe(source: Any, depth: int) -> str:
    if isinstance(source, str):
        text = source if len(source) <= _MAX_LABEL_CHARS else source[: _MAX_LABEL_CHARS - 3] + "..."
        return repr(text)
    if isinstance(source, os.PathLike):
        return describe_source(os.fspath(source), depth)
    if isinstance(source, (bytes, bytearray)):
        return f"<{type(source).__name__} of {len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL.Image mode={source.mode} size={source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        kind = "ndarray" if type(source) is np.ndarray else type(source).__qualname__
        return f"<{kind} shape={tuple(source.shape)} dtype={source.dtype}>"
    if isinstance(source, dict):
        keys = ", ".join(repr(k)[:40] for k in list(source)[:5])
        inner = ""
        if "image" in source:
            inner = ", image=<...>" if depth >= 2 else f", image={describe_source(source['image'], depth + 1)}"
        return f"<dict keys=[{keys}]{inner}>"
    return f"<{type(source).__module__}.{type(source).__qualname__} object>"


def as_image_error(exc: BaseException, source: Any) -> FaceMaskError:
    """``exc`` if it is one of ours, else an :class:`ImageLoadError` naming ``source``, chained to ``exc``."""
    if isinstance(exc, FaceMaskError):
        return exc
    error = ImageLoadError(
        f"cannot read image {describe_source(source)} ({type(exc).__name__}: {exc}); pass a local path, an "
        "http(s) URL, encoded image bytes, a PIL image, a BGR uint8 numpy array or {'image': ...}"
    )
    error.__cause__ = exc
    return error


# ---------------------------------------------------------------------------------------------------- listing
def is_image_entry(path: Path) -> bool:
    """True for a folder entry with an image suffix that is not a folder: a regular file, and also a dangling
    symlink, a FIFO, a socket or a device, which :func:`~.images.load_image` reports as unreadable (without opening
    them) so that they are counted as errors rather than dropped without a word."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()


def image_paths_under(folder: str | os.PathLike) -> list[Path]:
    """The image entries (:func:`is_image_entry`) under ``folder``, recursive and sorted, hidden files and folders
    skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if is_image_entry(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))
