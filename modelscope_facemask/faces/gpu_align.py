"""5-point alignment of all faces of a batch at once in torch (the CUDA option; runs on the CPU too).

:func:`similarity_transforms` is scikit-image's Umeyama estimate (as :func:`.align.similarity_transform`) batched
over faces, in float64. :func:`warp_faces_batched` samples every crop of every image in one call: bilinear, pixel
centres at integer coordinates and 0 outside the image, which is ``cv2.warpAffine``'s (and ``grid_sample``'s with
``align_corners=False``, ``padding_mode='zeros'``) geometry, but in floating point: OpenCV quantises the sampling
positions to 1/32 px and the weights to 15 bits, so crops differ from the OpenCV path by a grey level or so
(measured in the README). The OpenCV path (:func:`.align.warp_faces`) stays the default and the parity reference.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import AlignmentError
from .align import arcface_template


def similarity_transforms(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) float64 similarity transforms mapping each ``src[i]`` (N, P, 2) onto ``dst`` (P, 2).

    Same estimate as :func:`.align.similarity_transform` face by face (including its handling of collinear
    points); faces whose points coincide get an all-NaN matrix.
    """
    src = src.to(torch.float64)
    dst = dst.to(src.device, torch.float64)
    num = src.shape[1]
    src_mean = src.mean(dim=1, keepdim=True)
    dst_mean = dst.mean(dim=0, keepdim=True)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    a = dst_demean.T[None] @ src_demean / num  # (N, 2, 2)
    d = torch.ones(len(src), 2, dtype=torch.float64, device=src.device)
    d[:, 1] = torch.where(torch.linalg.det(a) < 0, -1.0, 1.0)
    u, s, v = torch.linalg.svd(a)
    tol = s.amax(dim=1) * 2 * np.finfo(float).eps
    rank = (s > tol[:, None]).sum(dim=1)
    collinear = rank == 1
    proper = torch.linalg.det(u) * torch.linalg.det(v) > 0
    d_used = d.clone()
    d_used[collinear & proper] = 1.0  # rank dim-1: u @ v when that is a proper rotation ...
    d_used[collinear & ~proper, 1] = -1.0  # ... else u @ diag(d with last -1) @ v
    rotation = u @ torch.diag_embed(d_used) @ v
    scale = 1.0 / src_demean.var(dim=1, unbiased=False).sum(dim=1) * (s * d).sum(dim=1)
    t = torch.eye(3, dtype=torch.float64, device=src.device).repeat(len(src), 1, 1)
    t[:, :2, 2] = dst_mean[0] - scale[:, None] * (rotation @ src_mean.transpose(1, 2))[:, :, 0]
    t[:, :2, :2] = rotation * scale[:, None, None]
    t[rank == 0] = float("nan")
    return t


def warp_faces_batched(
    images: Sequence[torch.Tensor],
    landmarks: torch.Tensor,
    image_index: torch.Tensor,
    size: tuple[int, int] = (112, 112),
) -> torch.Tensor:
    """Aligned (N, height, width, 3) uint8 crops for N faces of several images, in one sampling call.

    ``images``: (H, W, 3) uint8 tensors (any sizes), all on one device; ``landmarks`` (N, 5, 2) or (N, 10) in
    their pixels; ``image_index`` (N,) which image each face is in. Raises :class:`AlignmentError` for a face
    whose landmarks coincide (as :func:`.align.warp_face`).
    """
    if len(landmarks) == 0:
        device = images[0].device if len(images) else torch.device("cpu")
        return torch.zeros((0, size[0], size[1], 3), dtype=torch.uint8, device=device)
    device = images[0].device
    points = landmarks.reshape(len(landmarks), 5, 2)
    template = torch.from_numpy(arcface_template(size))
    matrices = similarity_transforms(points.to(torch.float64), template)
    finite = torch.isfinite(matrices).all(dim=2).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0, 0])
        raise AlignmentError(f"cannot align face {bad}: its five landmarks coincide ({points[bad].tolist()}); drop "
                             "this detection")
    inverse = torch.linalg.inv(matrices)[:, :2, :].to(device, torch.float32)  # crop pixel -> image pixel
    ys, xs = torch.meshgrid(torch.arange(size[0], device=device, dtype=torch.float32),
                            torch.arange(size[1], device=device, dtype=torch.float32), indexing="ij")
    grid = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1)  # (h, w, 3)
    coords = torch.einsum("hwk,njk->nhwj", grid, inverse)  # (N, h, w, 2) source (x, y)
    flat = torch.cat([img.reshape(-1, 3) for img in images])  # uint8: only the samples become float
    offsets = torch.tensor([0] + [img.shape[0] * img.shape[1] for img in images], device=device).cumsum(0)[:-1]
    heights = torch.tensor([img.shape[0] for img in images], device=device)
    widths = torch.tensor([img.shape[1] for img in images], device=device)
    index = image_index.to(device)
    crops = _bilinear(flat, offsets[index], heights[index], widths[index], coords)
    return crops.round().clamp(0, 255).to(torch.uint8)


def _bilinear(flat: torch.Tensor, offsets: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
              coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, h, w, 3) of the images stored row-major in ``flat`` at ``coords`` (N, h, w, 2); 0 outside."""
    x, y = coords[..., 0], coords[..., 1]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.long(), y0.long()
    h, w, base = heights[:, None, None], widths[:, None, None], offsets[:, None, None]
    out = torch.zeros((*coords.shape[:3], 3), dtype=torch.float32, device=flat.device)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))[..., None]
        where = base + yi.clamp(0) * w + xi.clamp(0)
        where = torch.where(inside[..., 0], where, base)
        out += flat[where].to(torch.float32) * weight * inside
    return out


def warp_image_faces(
    images_rgb: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], *, device: torch.device | str = "cpu",
    size: tuple[int, int] = (112, 112),
) -> list[np.ndarray]:
    """For each image its faces' aligned crops (n_i, height, width, 3) uint8, all sampled in one call on ``device``.

    ``landmarks[i]`` is image i's (n_i, 10) or (n_i, 5, 2) landmarks. The images travel to ``device`` once."""
    device = torch.device(device)
    counts = [len(np.asarray(p).reshape(-1, 10)) for p in landmarks]
    if sum(counts) == 0:
        return [np.zeros((0, size[0], size[1], 3), np.uint8) for _ in counts]
    used = [i for i, n in enumerate(counts) if n]
    pinned = device.type == "cuda" and torch.cuda.is_available()
    tensors = [_to_device(images_rgb[i], device, pinned) for i in used]
    points = torch.from_numpy(np.concatenate([np.asarray(landmarks[i], np.float64).reshape(-1, 10) for i in used]))
    index = torch.repeat_interleave(torch.arange(len(used)), torch.tensor([counts[i] for i in used]))
    crops = warp_faces_batched(tensors, points, index, size).cpu().numpy()
    out, start = [], 0
    for n in counts:
        out.append(crops[start : start + n])
        start += n
    return out


def _to_device(image: np.ndarray, device: torch.device, pinned: bool) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    if pinned:
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=pinned)
