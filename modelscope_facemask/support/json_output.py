"""Strict JSON for everything this package prints or writes: never ``NaN``/``Infinity`` (invalid JSON).

Non-finite floats (e.g. the NaN scores and landmarks of ``use_det=False``) become ``null``; numpy scalars and arrays
become plain numbers and lists. Files are written atomically (temporary sibling renamed into place).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from .atomic_files import write_text_atomic


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively; numpy values become Python values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist) and type(value).__module__ == "numpy":
        return finite_or_none(tolist())
    return value


def json_text(data: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` of ``data`` with non-finite floats as null; raises ValueError rather than print ``NaN``."""
    return json.dumps(finite_or_none(data), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike, data: Any, *, durable: bool = False) -> Path:
    """Write pretty strict JSON (UTF-8, trailing newline) atomically; creates the parent folder (``durable``:
    fsync before the rename, :func:`~modelscope_facemask.support.atomic_files.write_bytes_atomic`)."""
    path = Path(path)
    write_text_atomic(path, json_text(data, indent=2) + "\n", durable=durable)
    return path
