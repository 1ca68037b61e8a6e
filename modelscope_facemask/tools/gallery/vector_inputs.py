"""Checks of the arrays given to the vector index: finite float32 unit rows, and unique non-negative int64 ids."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import VectorInputError

UNIT_TOLERANCE = 1e-3
_CHECK_CHUNK = 65_536  # rows checked at a time: no n-sized temporaries for a million rows


def check_rows(name: str, array: Any, dim: int | None) -> np.ndarray:
    """``array`` as a C-contiguous float32 (n, dim) matrix of finite unit rows, or VectorInputError."""
    if not isinstance(array, np.ndarray):
        raise VectorInputError(f"{name} must be a numpy array of shape (n, dim), got {type(array).__name__}")
    if array.ndim != 2:
        hint = " (one vector: pass vector[None, :])" if array.ndim == 1 else ""
        raise VectorInputError(f"{name} must be 2-D (n, dim), got shape {array.shape}{hint}")
    if dim is not None and array.shape[1] != dim:
        raise VectorInputError(f"{name} has {array.shape[1]} columns but the index holds {dim}-d vectors")
    if array.shape[1] == 0:
        raise VectorInputError(f"{name} has shape {array.shape}: vectors need at least one dimension")
    if array.dtype != np.float32:
        raise VectorInputError(f"{name} must be float32, got {array.dtype}: pass {name}.astype(np.float32)")
    array = np.ascontiguousarray(array)
    for start in range(0, len(array), _CHECK_CHUNK):
        chunk = array[start:start + _CHECK_CHUNK]
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise VectorInputError(f"{name} row {row} holds NaN or Inf; only finite unit vectors can be indexed")
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        off = np.abs(norms - 1.0) > UNIT_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise VectorInputError(f"{name} row {start + row} has L2 norm {norms[row]:.6g}, not 1: inner-product "
                                   "search needs unit rows; divide each row by its norm")
    return array


def check_ids(ids: Any, n: int) -> np.ndarray:
    """``ids`` as a contiguous int64 vector of ``n`` unique non-negative ids, or VectorInputError."""
    if not isinstance(ids, np.ndarray):
        raise VectorInputError(f"ids must be a numpy int64 array, got {type(ids).__name__}")
    if ids.ndim != 1 or len(ids) != n:
        raise VectorInputError(f"ids must have shape ({n},) (one per vector), got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise VectorInputError(f"ids must be integers (int64), got {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if n and ids.min() < 0:
        raise VectorInputError(f"ids must be >= 0, got {int(ids.min())} (negative ids mean 'no result' in searches)")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != n:
        raise VectorInputError(f"ids must be unique, {int(unique[counts > 1][0])} appears {int(counts.max())} times")
    return ids
