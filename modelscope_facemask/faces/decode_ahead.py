"""Decode the next chunk of inputs while the current one computes (the GPU path's overlap; bounded memory).

:func:`chunks_ahead` yields ``(chunk, loaded)`` pairs in order, where ``loaded`` holds ``load(item)`` for each item
of the chunk, or the exception that item raised (one bad item never sinks the others). One background thread loads
at most ONE chunk ahead of the one being consumed, so at most two chunks of decoded images exist at a time.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence


def load_each(items: Sequence[Any], load: Callable[[Any], Any]) -> list[Any]:
    """``[load(item), ...]`` with an item's exception in its slot instead of its result."""
    out: list[Any] = []
    for item in items:
        try:
            out.append(load(item))
        except Exception as exc:  # noqa: BLE001 - kept per item, raised or reported by the caller
            out.append(exc)
    return out


def chunks_ahead(items: Sequence[Any], chunk_size: int, load: Callable[[Any], Any]) -> Iterator[tuple[list[Any], list[Any]]]:
    """Chunks of ``items`` with their loaded values, the next chunk loading in a thread while the caller works."""
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facemask-decode") as pool:
        pending: Future = pool.submit(load_each, chunks[0], load)
        for index, chunk in enumerate(chunks):
            loaded = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(load_each, chunks[index + 1], load)
            yield chunk, loaded
            del loaded
