"""RetinaFace post-processing: decode head outputs, threshold, top-k, NMS, rescale.

Reproduces the tail of ModelScope's ``RetinaFaceDetection.forward`` (``decode``, ``decode_landm``, ``py_cpu_nms``)
with the same float32 arithmetic, but with a vectorised NMS and without the reference's quirk of dividing the
scores by the resize factor.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .detections import Detections

_NMS_BLOCK = 128


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    """Box regressions (..., N, 4) + priors (N, 4) ``(cx, cy, w, h)`` -> ``[x1, y1, x2, y2]`` (normalised)."""
    centers = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    bottom_right = sizes + top_left
    return torch.cat((top_left, bottom_right), dim=-1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    """Landmark regressions (..., N, 10) + priors (N, 4) -> five ``(x, y)`` points (..., N, 10) (normalised)."""
    points = pre.reshape(*pre.shape[:-1], 5, 2)
    decoded = priors[..., None, :2] + points * variances[0] * priors[..., None, 2:]
    return decoded.reshape(pre.shape)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, exactly ``py_cpu_nms``: indices of kept boxes in processing (score-descending) order.

    Same ``+1`` area convention, float32 arithmetic, ``iou <= threshold`` survives, and the tie order of
    ``scores.argsort()[::-1]``. Vectorised, no loop over boxes: boxes are taken in score-ordered blocks; a block is
    first suppressed by every box already kept (one IoU matrix), then its own greedy keep set is solved by a
    fixed-point iteration on the block's IoU>threshold matrix. Across blocks only kept boxes are compared, so the
    work is about (kept x N + N x block) IoUs instead of N^2, and memory stays O(N x block).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    order = scores.argsort()[::-1]
    ordered = boxes[order, :4]
    areas = (ordered[:, 2] - ordered[:, 0] + 1) * (ordered[:, 3] - ordered[:, 1] + 1)
    keep = np.zeros(len(order), dtype=bool)
    for start in range(0, len(order), _NMS_BLOCK):
        block = slice(start, start + _NMS_BLOCK)
        kept_before = np.flatnonzero(keep[:start])
        allowed = ~_suppression(ordered[kept_before], areas[kept_before], ordered[block], areas[block],
                                iou_threshold).any(axis=0)
        inside = np.triu(_suppression(ordered[block], areas[block], ordered[block], areas[block], iou_threshold), k=1)
        keep[block] = _greedy_keep(inside, allowed)
    return order[keep]


def _suppression(
    rows: np.ndarray, row_areas: np.ndarray, cols: np.ndarray, col_areas: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """(R, C) bool: ``not (IoU <= threshold)``, with ``py_cpu_nms``'s float32 operations in the same order."""
    xx1 = np.maximum(rows[:, None, 0], cols[None, :, 0])
    yy1 = np.maximum(rows[:, None, 1], cols[None, :, 1])
    xx2 = np.minimum(rows[:, None, 2], cols[None, :, 2])
    yy2 = np.minimum(rows[:, None, 3], cols[None, :, 3])
    w = np.maximum(0.0, xx2 - xx1 + 1)
    h = np.maximum(0.0, yy2 - yy1 + 1)
    inter = w * h
    ovr = inter / (row_areas[:, None] + col_areas[None, :] - inter)
    return ~(ovr <= iou_threshold)


def _greedy_keep(suppresses: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Solve keep[j] = allowed[j] and not any(keep[i] and suppresses[i, j] for i < j); ``suppresses`` strictly upper.

    Fixed-point iteration from keep = allowed. After a pass, every position up to and including the first one that
    changed is final, so each pass settles at least one more position and only the unsettled suffix is recomputed.
    The solution is unique (triangular system), hence equal to the sequential greedy loop's.
    """
    count = len(allowed)
    keep = allowed.copy()
    settled = 1  # position 0 has no predecessor: keep[0] = allowed[0] is final
    while settled < count:
        new = allowed[settled:] & ~suppresses[keep, settled:].any(axis=0)
        changed = np.flatnonzero(new != keep[settled:])
        keep[settled:] = new
        if len(changed) == 0:
            break
        settled += int(changed[0]) + 1
    return keep


def postprocess_detections(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    *,
    variances: Sequence[float],
    image_width: int,
    image_height: int,
    scale: float = 1.0,
    confidence_threshold: float = 0.9,
    top_k: int = 5000,
    nms_threshold: float = 0.4,
    keep_top_k: int = 750,
) -> Detections:
    """Raw RetinaFace head outputs of ONE image -> ``Detections`` in original-image pixels, sorted by score.

    ``loc`` (N, 4), ``conf`` (N, 2) softmaxed, ``landmarks`` (N, 10) (a leading batch dim of 1 is accepted);
    ``image_width``/``image_height``: the network input size; ``scale``: the resize factor applied to the original
    image before the network (coordinates are divided by it, scores are not).
    """
    loc, conf, landmarks = (_one_image(t, name) for t, name in ((loc, "loc"), (conf, "conf"), (landmarks, "landmarks")))
    priors = priors.to(loc.device)
    box_scale = torch.tensor([image_width, image_height] * 2, dtype=torch.float32, device=loc.device)
    point_scale = torch.tensor([image_width, image_height] * 5, dtype=torch.float32, device=loc.device)
    boxes = (decode_boxes(loc, priors, variances) * box_scale).cpu().numpy()
    points = (decode_landmarks(landmarks, priors, variances) * point_scale).cpu().numpy()
    scores = conf[:, 1].cpu().numpy()

    inds = np.where(scores > confidence_threshold)[0]
    boxes, points, scores = boxes[inds], points[inds], scores[inds]
    order = scores.argsort()[::-1][:top_k]
    boxes, points, scores = boxes[order], points[order], scores[order]

    keep = nms(boxes, scores, nms_threshold)[:keep_top_k]
    boxes, points, scores = boxes[keep], points[keep], scores[keep]
    # Like the reference (float32 array / Python float), in float32; scores are deliberately not divided.
    boxes = boxes / np.float32(scale)
    points = points / np.float32(scale)
    return Detections(
        boxes=np.ascontiguousarray(boxes, dtype=np.float32),
        scores=np.ascontiguousarray(scores, dtype=np.float32),
        landmarks=np.ascontiguousarray(points, dtype=np.float32),
    )


def _one_image(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be (N, C) or (1, N, C) for one image, got shape {tuple(tensor.shape)}")
    return tensor.detach().float()
