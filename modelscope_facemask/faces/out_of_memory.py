"""Out-of-memory handling for batched network runs: a batch that does not fit is halved and retried, down to one.

A caught out-of-memory error is ``torch.cuda.OutOfMemoryError`` (or ``torch.OutOfMemoryError``) or any
``RuntimeError`` whose message says so: "out of memory" (older PyTorch, other backends), or PyTorch's CPU allocator's
"can't allocate memory" / "not enough memory". At batch 1 the error is
re-raised as :class:`~modelscope_facemask.errors.BatchOutOfMemoryError`, chained to the original.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

from ..errors import BatchOutOfMemoryError
from ..support.log import logger

T = TypeVar("T")
#: phrases of out-of-memory ``RuntimeError`` messages (CUDA/HIP/MPS, and PyTorch's DefaultCPUAllocator)
OUT_OF_MEMORY_PHRASES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error of any device."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
    if isinstance(exc, oom_types):
        return True
    message = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return any(phrase in message for phrase in OUT_OF_MEMORY_PHRASES)


def release_cached_memory() -> None:
    """Give cached CUDA blocks back after an out-of-memory error (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_halving(run: Callable[[int, int], T], count: int, *, what: str) -> list[T]:
    """``[run(start, stop), ...]`` covering rows ``0..count`` in order: first ``run(0, count)``; when it runs out of
    memory, each half is run the same way, recursively, down to single rows. ``what`` names the network in the
    error raised when a single row does not fit."""
    try:
        return [run(0, count)]
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
        if not is_out_of_memory(exc):
            raise
        release_cached_memory()
        if count <= 1:
            raise BatchOutOfMemoryError(
                f"the {what} ran out of device memory on a batch of 1 ({type(exc).__name__}: {exc}); free device "
                "memory (other processes), use a smaller image or precision='fp16'/'bf16', or device='cpu'"
            ) from exc
    half = count // 2
    logger.warning("the %s ran out of memory on a batch of %d: retrying as batches of %d and %d", what, count, half,
                   count - half)
    first = run_halving(run, half, what=what)
    second = run_halving(lambda a, b: run(half + a, half + b), count - half, what=what)
    return first + second
