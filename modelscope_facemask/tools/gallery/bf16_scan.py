"""The vector index's ``bf16`` search method: a brute-force bfloat16 scan of every stored vector, then the best
``k + RESCORE_MARGIN`` candidates per query re-scored in float32 (why and when it pays: :mod:`.vector_index`)."""
from __future__ import annotations

from typing import Any

import numpy as np

RESCORE_MARGIN = 32  # candidates kept per query beyond k, re-scored in float32
_SCAN_CHUNK = 65_536  # stored vectors per matmul (bounds the (queries, chunk) score block)
_RESCORE_QUERIES = 1_024  # queries re-scored at a time (bounds the (queries, k + margin, dim) gather)


def bf16_copy(stored: np.ndarray) -> Any:
    """A torch bfloat16 copy of the stored float32 vectors (the scan's operand; dim x 2 bytes per vector)."""
    import torch

    return torch.from_numpy(stored).to(torch.bfloat16)


def bf16_search(queries: np.ndarray, k: int, stored: np.ndarray, stored_bf16: Any, id_map: np.ndarray,
                any_removed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``queries`` against ``stored`` (float32, its :func:`bf16_copy` ``stored_bf16``, one id per row in
    ``id_map``, negative for a removed row, which ``any_removed`` says may occur): (scores float32 (q, k) exact inner
    products, descending, ids int64 (q, k)); missing results are id -1 with score -inf."""
    import torch

    dead = torch.from_numpy(id_map < 0) if any_removed else None
    keep = min(k + RESCORE_MARGIN, len(stored))
    scan = torch.from_numpy(queries).to(torch.bfloat16)
    best_scores: list[Any] = []
    best_rows: list[Any] = []
    with torch.no_grad():
        for start in range(0, len(stored), _SCAN_CHUNK):
            block = scan @ stored_bf16[start:start + _SCAN_CHUNK].T
            if dead is not None:
                block[:, dead[start:start + _SCAN_CHUNK]] = -torch.inf
            values, rows = torch.topk(block, min(keep, block.shape[1]), dim=1)
            best_scores.append(values)
            best_rows.append(rows + start)
        merged, order = torch.topk(torch.cat(best_scores, 1).float(), keep, dim=1)
        candidates = torch.gather(torch.cat(best_rows, 1), 1, order).numpy()
    alive = np.isfinite(merged.numpy())
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(queries), _RESCORE_QUERIES):
        part = slice(start, start + _RESCORE_QUERIES)
        exact = np.einsum("qd,qkd->qk", queries[part], stored[candidates[part]])
        exact[~alive[part]] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(exact, order, axis=1)
        found = np.isfinite(top)
        width = top.shape[1]
        scores[part, :width] = top
        ids[part, :width] = np.where(found, id_map[np.take_along_axis(candidates[part], order, axis=1)], -1)
    return scores, ids
