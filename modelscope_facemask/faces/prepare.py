"""From loaded images to aligned face crops: detect (batched), choose, align. One path for one or many images."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..errors import FaceMaskError, FacePreparationError
from .align import warp_faces
from .choose import choose_faces
from .detections import Detections
from .detector import FaceDetector

CROP_SIZE = 112


@dataclass(frozen=True)
class PreparedFaces:
    """The chosen faces of one image and their aligned RGB crops, rows aligned."""

    detections: Detections
    crops: np.ndarray  # (N, 112, 112, 3) uint8 RGB

    def __len__(self) -> int:
        return len(self.crops)


def whole_image_faces(image_rgb: np.ndarray) -> PreparedFaces:
    """``use_det=False``: the whole image resized to 112x112 exactly like the built-in (``cv2.resize``, bilinear).

    The single row's box is the whole image; its score and landmarks are NaN (nothing was detected).
    """
    height, width = image_rgb.shape[:2]
    crop = cv2.resize(image_rgb, (CROP_SIZE, CROP_SIZE))
    dets = Detections(
        np.array([[0, 0, width, height]], np.float32), np.full((1,), np.nan, np.float32), np.full((1, 10), np.nan, np.float32)
    )
    return PreparedFaces(dets, crop[None])


def prepare_faces(
    images_rgb: Sequence[np.ndarray],
    detector: FaceDetector | None,
    *,
    max_faces: int | None = 1,
    min_face_size: float = 10.0,
) -> list[PreparedFaces]:
    """Detect faces in all images at once, keep ``max_faces`` per image (largest first; ``None`` = all), align them.

    ``detector=None`` means ``use_det=False``: each whole image becomes one crop.
    """
    if detector is None:
        return [whole_image_faces(img) for img in images_rgb]
    prepared = []
    for image, dets in zip(images_rgb, detector.detect(images_rgb)):
        chosen = choose_faces(dets, max_faces=max_faces, min_size=min_face_size)
        # float64 landmarks, as the reference hands them to align_face (its detector output goes through .tolist())
        crops = warp_faces(image, chosen.landmarks.astype(np.float64))
        prepared.append(PreparedFaces(chosen, crops))
    return prepared


def preparation_error(exc: BaseException, label: str) -> FaceMaskError:
    """``exc`` if it is one of ours, else a :class:`FacePreparationError` naming the image, chained to ``exc``."""
    if isinstance(exc, FaceMaskError):
        return exc
    error = FacePreparationError(
        f"face detection or alignment failed for image {label} ({type(exc).__name__}: {exc}); the other images "
        "are unaffected. Check the image (or downscale it on MemoryError); if it is valid, please report it"
    )
    error.__cause__ = exc
    return error


def prepare_faces_each(
    images_rgb: Sequence[np.ndarray],
    labels: Sequence[str],
    detector: FaceDetector | None,
    *,
    max_faces: int | None = 1,
    min_face_size: float = 10.0,
) -> list[PreparedFaces | FaceMaskError]:
    """:func:`prepare_faces`, but an image that fails gets its error in its slot instead of sinking the others.

    The batched call runs first; only if it raises does each image run alone, so that the culprit is found.
    """
    def run(images: Sequence[np.ndarray]) -> list[PreparedFaces]:
        return prepare_faces(images, detector, max_faces=max_faces, min_face_size=min_face_size)

    try:
        return list(run(images_rgb))
    except Exception as exc:
        if len(images_rgb) == 1:
            return [preparation_error(exc, labels[0])]
    results: list[PreparedFaces | FaceMaskError] = []
    for image, label in zip(images_rgb, labels):
        try:
            results.append(run([image])[0])
        except Exception as exc:
            results.append(preparation_error(exc, label))
    return results
