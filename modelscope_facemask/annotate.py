"""Annotated pictures of what the detector found: boxes, scores and landmarks, plus the aligned 112x112 crops."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .drawing import draw_faces, save_rgb
from .errors import FaceMaskError
from .faces.images import load_image


@dataclass(frozen=True)
class Annotation:
    """The written files: the annotated image and one crop per face (``<stem>_face<i>.png``), faces by row."""

    image: Path
    crops: list[Path]
    scores: list[float]


def crop_path(out: Path, index: int) -> Path:
    """Where face ``index``'s aligned crop goes, next to the annotated image (always PNG: lossless)."""
    return out.with_name(f"{out.stem}_face{index}.png")


def annotate_image(preprocessor: Any, image: Any, out: str | os.PathLike, *, max_faces: int | None = None) -> Annotation:
    """Detect faces in ``image`` with ``preprocessor`` (FaceMaskPreprocessor), draw them into ``out`` and write the
    aligned crops beside it. Raises the pipeline's :class:`FaceMaskError` for an unreadable image."""
    rgb = load_image(image)
    prepared = preprocessor.prepare([rgb[:, :, ::-1]], max_faces=max_faces)[0]  # ndarray inputs are BGR
    if isinstance(prepared, FaceMaskError):
        raise prepared
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dets = prepared.detections
    save_rgb(out, draw_faces(rgb, dets.boxes, dets.scores, dets.landmarks))
    crops = []
    for index, crop in enumerate(prepared.crops):
        save_rgb(crop_path(out, index), crop)
        crops.append(crop_path(out, index))
    return Annotation(out, crops, [float(s) for s in dets.scores])
