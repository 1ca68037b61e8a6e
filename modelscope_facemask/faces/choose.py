"""Choose which detected faces to recognise (ModelScope's ``FaceProcessingBasePipeline._choose_face``)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError
from .detections import Detections


def choose_faces(dets: Detections, max_faces: int | None = 1, min_size: float = 10) -> Detections:
    """Drop faces narrower or shorter than ``min_size`` px, then pick faces.

    ``max_faces=1``: the largest by box area (the reference's ``np.argsort(area)[-1]``, same tie rule);
    ``max_faces=k``: the k largest, by area descending; ``None``: every remaining face, by score descending.
    Returns an empty ``Detections`` when nothing remains.
    """
    validate_max_faces(max_faces)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float, np.integer, np.floating)) or min_size < 0:
        raise ConfigurationError(f"min_size must be a non-negative number of pixels, got {min_size!r}")
    boxes = dets.boxes
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    big_enough = np.flatnonzero((widths >= min_size) & (heights >= min_size))
    faces = dets.select(big_enough)
    if len(faces) == 0:
        return Detections.empty()
    if max_faces is None:
        return faces.select(np.argsort(-faces.scores, kind="stable"))
    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    largest_last = np.argsort(area)[-max_faces:]
    return faces.select(largest_last[::-1])


def validate_max_faces(max_faces: object) -> None:
    """Raise ``ConfigurationError`` unless ``max_faces`` is a positive int or None."""
    if max_faces is None:
        return
    if isinstance(max_faces, bool) or not isinstance(max_faces, (int, np.integer)) or max_faces < 1:
        raise ConfigurationError(
            f"max_faces must be a positive integer or None (all faces), got {max_faces!r}; use 1 for the largest face"
        )
