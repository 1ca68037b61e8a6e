"""5-point face alignment onto the ArcFace template, pixel-identical to ModelScope's ``align_face``.

``similarity_transform`` re-implements scikit-image's ``SimilarityTransform.estimate`` (Umeyama 1991 with scale,
including its rank-deficient handling) operation for operation, so the matrix is bit-identical for the same input
dtype; ``warp_face`` then makes the same ``cv2.warpAffine`` call (default flags: bilinear, constant 0 border).
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from ..errors import AlignmentError

_BASE_SIZE = (112, 96)  # (height, width) of the template's base landmarks
_BASE_LANDMARKS = [30.2946, 51.6963, 65.5318, 51.5014, 48.0252, 71.7366, 33.5493, 92.3655, 62.7299, 92.2041]


def arcface_template(size: Tuple[int, int] = (112, 112)) -> np.ndarray:
    """(5, 2) float32 destination landmarks for a ``size`` = (height, width) crop, built exactly like ``align_face``."""
    height, width = size
    if width < _BASE_SIZE[1] or height < _BASE_SIZE[0]:
        raise AlignmentError(f"alignment size (height, width) must be at least {_BASE_SIZE}, got {size}")
    template = np.array(_BASE_LANDMARKS).reshape((5, 2)).astype(np.float32)
    if width != _BASE_SIZE[1]:
        template[:, 0] += (width - _BASE_SIZE[1]) / 2
    if height != _BASE_SIZE[0]:
        template[:, 1] += (height - _BASE_SIZE[0]) / 2
    return template


ARCFACE_TEMPLATE = arcface_template((112, 112))
ARCFACE_TEMPLATE.setflags(write=False)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) float64 least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Same result as ``skimage.transform.SimilarityTransform().estimate(src, dst)`` -> ``.params``: all NaN when the
    source points coincide (rank 0); a proper rotation is forced when the points are collinear (rank dim - 1).
    Arithmetic runs in the inputs' float dtype, as in scikit-image.
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise AlignmentError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    a = dst_demean.T @ src_demean / num
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, v = np.linalg.svd(a)
    tol = s.max() * np.max(a.shape) * np.finfo(float).eps
    rank = np.count_nonzero(s > tol)
    if rank == 0:
        return np.nan * t
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(v) > 0:
            t[:dim, :dim] = u @ v
        else:
            forced = d.copy()
            forced[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(forced) @ v
    else:
        t[:dim, :dim] = u @ np.diag(d) @ v
    scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t


def warp_face(image: np.ndarray, landmarks: np.ndarray, size: Tuple[int, int] = (112, 112)) -> np.ndarray:
    """Aligned ``size`` = (height, width) uint8 crop of ``image`` (H, W, 3) from five (x, y) ``landmarks``.

    Pixel-identical to ModelScope's ``align_face(image, size, landmarks)[0]``. Channel order is kept.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise AlignmentError(f"image must be (H, W, 3), got shape {image.shape}")
    points = np.asarray(landmarks).reshape(5, 2) if np.size(landmarks) == 10 else np.asarray(landmarks)
    matrix = similarity_transform(points, arcface_template(size))
    if not np.all(np.isfinite(matrix)):
        raise AlignmentError(
            f"cannot align a face whose five landmarks coincide ({points.tolist()}); drop this detection"
        )
    return cv2.warpAffine(np.ascontiguousarray(image), matrix[0:2, :], (size[1], size[0]))


def warp_faces(image: np.ndarray, landmarks: np.ndarray, size: Tuple[int, int] = (112, 112)) -> np.ndarray:
    """Aligned crops (N, height, width, 3) for N faces; ``landmarks`` is (N, 5, 2) or (N, 10)."""
    points = np.asarray(landmarks)
    if points.ndim not in (2, 3) or points.shape[1:] not in ((10,), (5, 2)):
        raise AlignmentError(f"landmarks must be (N, 5, 2) or (N, 10), got shape {points.shape}")
    points = points.reshape(len(points), 5, 2)
    crops = np.empty((len(points), size[0], size[1], 3), dtype=image.dtype)
    for index, face in enumerate(points):
        crops[index] = warp_face(image, face, size)
    return crops


def alignment_error(landmarks: np.ndarray, matrix: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE) -> float:
    """Mean distance in crop pixels between the five ``landmarks`` mapped by ``matrix`` and the ``template``."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    mapped = points @ np.asarray(matrix, dtype=np.float64)[:2, :2].T + np.asarray(matrix, dtype=np.float64)[:2, 2]
    return float(np.linalg.norm(mapped - np.asarray(template, dtype=np.float64), axis=1).mean())


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points)
    if array.ndim != 2 or len(array) == 0:
        raise AlignmentError(f"{name} must be (N, D) points, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return array
