"""RetinaFace post-processing for a whole batch on the network's device (the CUDA path; runs on the CPU too).

Same results as :func:`.postprocess.postprocess_detections` run image by image, row for row: the same float32
decode (the same torch operations on the same device), ``score > threshold``, the reference's order, ``top_k``,
greedy NMS with the ``+1`` area convention and ``iou <= threshold`` surviving, ``keep_top_k``, and coordinates
divided by the resize factor in float32.

All images of a batch are handled as one flat set of rows (each row carries its image's index), so decoding,
thresholding and NMS run once per batch, not once per image: NMS only lets two boxes suppress each other when they
belong to the same image (a mask, not the usual coordinate-offset trick, whose large offsets would change the
float32 IoUs). Torchvision's ``batched_nms`` is not used: it has no ``+1`` in its areas.

The one step that runs on the host is ordering the candidates (boxes above the threshold, typically a few dozen per
face): it repeats the numpy path's two ``argsort()[::-1]`` calls on the same float32 score arrays, so that even
exactly tied scores (common: a confident face saturates the softmax at 1.0 in float32) come out in the same order as
the numpy path. One small device-to-host copy per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from .anchors import prior_boxes
from .detections import Detections
from .postprocess import decode_boxes, decode_landmarks

#: candidates compared per NMS block (memory O(block x candidates) bools)
NMS_BLOCK = 1024


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds of post-processing; the defaults are the reference's."""

    confidence_threshold: float = 0.9
    top_k: int = 5000
    nms_threshold: float = 0.4
    keep_top_k: int = 750


def device_prior_boxes(
    height: int, width: int, min_sizes: Sequence[Sequence[int]], steps: Sequence[int], clip: bool,
    device: torch.device | str,
) -> torch.Tensor:
    """:func:`.anchors.prior_boxes` (bit-identical) as a read-only tensor on ``device``, cached per size and device.

    Do not modify the result in place (it is shared)."""
    key = (int(height), int(width), tuple(tuple(int(s) for s in level) for level in min_sizes),
           tuple(int(s) for s in steps), bool(clip), str(torch.device(device)))
    return _cached_device_priors(*key)


@lru_cache(maxsize=64)
def _cached_device_priors(height, width, min_sizes, steps, clip, device) -> torch.Tensor:
    return prior_boxes(height, width, min_sizes, steps, clip).to(torch.device(device))


def valid_anchor_index(
    height: int, width: int, padded_height: int, padded_width: int, min_sizes: Sequence[Sequence[int]],
    steps: Sequence[int],
) -> np.ndarray:
    """Indices, into the anchors of a ``padded_height`` x ``padded_width`` input, of the anchors of an image of
    ``height`` x ``width`` placed at the padded input's top-left corner, in the unpadded image's anchor order.

    The anchors of cell (i, j) of a level sit at the same pixels in both grids, so
    ``prior_boxes(padded)[index] * padded_size == prior_boxes(unpadded) * unpadded_size`` (up to float rounding)."""
    if height > padded_height or width > padded_width:
        raise ValueError(f"image {height}x{width} does not fit in the padded input {padded_height}x{padded_width}")
    parts, offset = [], 0
    for sizes, step in zip(min_sizes, steps):
        rows, cols = -(-height // step), -(-width // step)
        padded_rows, padded_cols = -(-padded_height // step), -(-padded_width // step)
        count = len(sizes)
        r, c, k = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(count), indexing="ij")
        parts.append((offset + (r * padded_cols + c) * count + k).reshape(-1))
        offset += padded_rows * padded_cols * count
    return np.concatenate(parts).astype(np.int64)


def postprocess_rows(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    input_sizes: torch.Tensor,
    image_ids: torch.Tensor,
    scales: Sequence[float],
    *,
    variances: Sequence[float],
    settings: PostprocessSettings = PostprocessSettings(),
) -> list[Detections]:
    """Post-process the anchors of several images given as one flat set of rows; one :class:`Detections` per image.

    ``loc`` (M, 4), ``conf`` (M, 2) softmaxed, ``landmarks`` (M, 10), ``priors`` (M, 4) each row's anchor
    (normalised to its image's network input), ``input_sizes`` (M, 2) float32 (width, height) of that input,
    ``image_ids`` (M,) int64 in 0..len(scales)-1, non-decreasing, rows of one image in its anchor order;
    ``scales``: each image's resize factor. All tensors on one device.
    """
    count = len(scales)
    device = loc.device
    widths, heights = input_sizes[:, 0:1], input_sizes[:, 1:2]
    box_scale = torch.cat((widths, heights, widths, heights), dim=1)
    point_scale = torch.cat((widths, heights) * 5, dim=1)
    scores_all = conf[:, 1].float()
    above = torch.nonzero(scores_all > settings.confidence_threshold).reshape(-1)
    # Decoded for all rows, then selected: the same tensor shapes as the per-image path, so the same kernels run.
    boxes = (decode_boxes(loc.float(), priors, variances) * box_scale)[above]
    points = (decode_landmarks(landmarks.float(), priors, variances) * point_scale)[above]
    scores = scores_all[above]
    ids = image_ids[above]
    order = torch.from_numpy(_reference_order(scores.cpu().numpy(), ids.cpu().numpy(), count, settings.top_k))
    order = order.to(device)
    boxes, points, scores, ids = boxes[order], points[order], scores[order], ids[order]
    keep = nms_rows(boxes, ids, settings.nms_threshold)
    boxes, points, scores, ids = boxes[keep], points[keep], scores[keep], ids[keep]
    rank = _rank_within_image(ids, count)
    top = rank < settings.keep_top_k
    boxes, points, scores, ids = boxes[top], points[top], scores[top], ids[top]
    divisor = torch.tensor(np.asarray(scales, np.float32), device=device)[ids][:, None]
    boxes, points = boxes / divisor, points / divisor
    counts = torch.bincount(ids, minlength=count).cpu().tolist()
    boxes_np, points_np, scores_np = boxes.cpu().numpy(), points.cpu().numpy(), scores.cpu().numpy()
    results, start = [], 0
    for n in counts:
        rows = slice(start, start + n)
        start += n
        results.append(Detections(np.ascontiguousarray(boxes_np[rows], np.float32),
                                  np.ascontiguousarray(scores_np[rows], np.float32),
                                  np.ascontiguousarray(points_np[rows], np.float32)))
    return results


def postprocess_batch(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    *,
    variances: Sequence[float],
    image_width: int,
    image_height: int,
    scales: Sequence[float],
    settings: PostprocessSettings = PostprocessSettings(),
) -> list[Detections]:
    """A batch of equal-size inputs: ``loc`` (B, N, 4), ``conf`` (B, N, 2), ``landmarks`` (B, N, 10), ``priors``
    (N, 4) -> one :class:`Detections` per image, equal to :func:`.postprocess.postprocess_detections` per image."""
    batch, anchors = loc.shape[:2]
    device = loc.device
    ids = torch.arange(batch, device=device).repeat_interleave(anchors)
    sizes = torch.tensor([[image_width, image_height]], dtype=torch.float32, device=device).expand(batch * anchors, 2)
    return postprocess_rows(
        loc.reshape(-1, 4), conf.reshape(-1, 2), landmarks.reshape(-1, 10),
        priors.to(device).expand(batch, anchors, 4).reshape(-1, 4), sizes, ids, scales,
        variances=variances, settings=settings,
    )


def _reference_order(scores: np.ndarray, ids: np.ndarray, count: int, top_k: int) -> np.ndarray:
    """Positions of the candidates in processing order, image by image: for each image the numpy path's
    ``argsort()[::-1][:top_k]`` on its candidate scores, then NMS's own ``argsort()[::-1]`` on those."""
    bounds = np.searchsorted(ids, np.arange(count + 1))
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        own = scores[start:stop]
        first = own.argsort()[::-1][:top_k]
        second = own[first].argsort()[::-1]
        parts.append(start + first[second])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _rank_within_image(ids: torch.Tensor, count: int) -> torch.Tensor:
    """For rows grouped by image (non-decreasing ``ids``), each row's position within its image."""
    if len(ids) == 0:
        return ids
    firsts = torch.zeros(count + 1, dtype=torch.int64, device=ids.device)
    firsts[1:] = torch.cumsum(torch.bincount(ids, minlength=count), 0)
    return torch.arange(len(ids), device=ids.device) - firsts[ids]


def nms_rows(boxes: torch.Tensor, image_ids: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS over rows already in processing order, boxes of different images never suppressing each other.

    Returns the kept row positions (ascending). Same arithmetic as ``py_cpu_nms`` (float32, ``+1`` areas,
    ``iou <= threshold`` survives). Blocks of :data:`NMS_BLOCK` rows: a block is first suppressed by every row
    already kept, then its own greedy keep set is found by a fixed-point iteration (see ``postprocess._greedy_keep``).
    """
    count = len(boxes)
    boxes = boxes[:, :4].float()
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = torch.zeros(count, dtype=torch.bool, device=boxes.device)
    for start in range(0, count, NMS_BLOCK):
        block = slice(start, min(start + NMS_BLOCK, count))
        kept_before = torch.nonzero(keep[:start]).reshape(-1)
        allowed = ~(_suppression(boxes[kept_before], areas[kept_before], boxes[block], areas[block], iou_threshold)
                    & (image_ids[kept_before][:, None] == image_ids[block][None, :])).any(dim=0)
        inside = _suppression(boxes[block], areas[block], boxes[block], areas[block], iou_threshold)
        inside &= image_ids[block][:, None] == image_ids[block][None, :]
        keep[block] = _greedy_keep(torch.triu(inside, diagonal=1), allowed)
    return torch.nonzero(keep).reshape(-1)


def _suppression(rows: torch.Tensor, row_areas: torch.Tensor, cols: torch.Tensor, col_areas: torch.Tensor,
                 iou_threshold: float) -> torch.Tensor:
    """(R, C) bool ``not (IoU <= threshold)`` with ``py_cpu_nms``'s float32 operations in the same order."""
    xx1 = torch.maximum(rows[:, None, 0], cols[None, :, 0])
    yy1 = torch.maximum(rows[:, None, 1], cols[None, :, 1])
    xx2 = torch.minimum(rows[:, None, 2], cols[None, :, 2])
    yy2 = torch.minimum(rows[:, None, 3], cols[None, :, 3])
    w = torch.clamp_min(xx2 - xx1 + 1, 0.0)
    h = torch.clamp_min(yy2 - yy1 + 1, 0.0)
    inter = w * h
    ovr = inter / (row_areas[:, None] + col_areas[None, :] - inter)
    return ~(ovr <= iou_threshold)


def _greedy_keep(suppresses: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The sequential greedy keep set of one block, by fixed-point iteration (as ``postprocess._greedy_keep``)."""
    count = len(allowed)
    keep = allowed.clone()
    settled = 1
    while settled < count:
        new = allowed[settled:] & ~(suppresses[:, settled:] & keep[:, None]).any(dim=0)
        changed = torch.nonzero(new != keep[settled:])
        keep[settled:] = new
        if len(changed) == 0:
            break
        settled += int(changed[0, 0]) + 1
    return keep
