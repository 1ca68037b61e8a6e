"""Annotated pictures of what the detector found: boxes, scores and landmarks, plus the aligned 112x112 crops.

With ``mask=True`` the picture shows the photo with synthetic masks (:mod:`.masks`) drawn at the faces found on the
unmasked photo, annotated with what the detector then finds on the *masked* photo, and the crops are the masked
crops the recognizer would see: exactly what ``facemask evaluate --mask-probes`` feeds the recognizer. The clean
masked photo (no annotation) is written beside it as ``<stem>_masked.png``, to use as a probe elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .drawing import draw_faces, save_rgb
from ..errors import FaceMaskError
from ..faces.images import load_image


@dataclass(frozen=True)
class Annotation:
    """The written files: the annotated image and one crop per face (``<stem>_face<i>.png``), faces by row.

    With a mask: ``masked_image`` is the clean masked photo (``<stem>_masked.png``) and ``masks`` the number of
    masks drawn (faces found on the unmasked photo); ``scores`` and ``crops`` are those of the masked photo."""

    image: Path
    crops: list[Path]
    scores: list[float]
    masked_image: Path | None = None
    masks: int = 0


def crop_path(out: Path, index: int) -> Path:
    """Where face ``index``'s aligned crop goes, next to the annotated image (always PNG: lossless)."""
    return out.with_name(f"{out.stem}_face{index}.png")


def masked_path(out: Path) -> Path:
    """Where the clean masked photo goes, next to the annotated image (always PNG: lossless)."""
    return out.with_name(f"{out.stem}_masked.png")


def _prepare(preprocessor: Any, rgb: np.ndarray, max_faces: int | None) -> Any:
    prepared = preprocessor.prepare([rgb[:, :, ::-1]], max_faces=max_faces)[0]  # ndarray inputs are BGR
    if isinstance(prepared, FaceMaskError):
        raise prepared
    return prepared


def annotate_image(preprocessor: Any, image: Any, out: str | os.PathLike, *, max_faces: int | None = None,
                   mask: bool = False, mask_seed: int = 0,
                   check_paths: Callable[[list[Path]], None] | None = None) -> Annotation:
    """Detect faces in ``image`` with ``preprocessor`` (FaceMaskPreprocessor), draw them into ``out`` and write the
    aligned crops beside it. With ``mask``, first draw a synthetic mask (seed ``mask_seed + i`` for face ``i``) on
    every face found and annotate the masked photo instead (module docstring). ``check_paths``, when given, is
    called with every path about to be written (``out``, the masked photo, the crops) before the first one is
    written, and may raise to refuse them. Raises the pipeline's :class:`FaceMaskError` for an unreadable image,
    :class:`AlignmentError` for a mask without landmarks (``use_det=False``)."""
    rgb = load_image(image)
    masked = None
    masks = 0
    if mask:
        from .masks import check_seed, draw_masks

        check_seed(mask_seed, where="mask_seed")
        unmasked = _prepare(preprocessor, rgb, max_faces).detections
        masks = len(unmasked)
        rgb = masked = draw_masks(rgb, unmasked.landmarks, seed=mask_seed)
    prepared = _prepare(preprocessor, rgb, max_faces)
    out = Path(out)
    if check_paths is not None:
        check_paths([out, *([masked_path(out)] if masked is not None else []),
                     *(crop_path(out, index) for index in range(len(prepared.crops)))])
    out.parent.mkdir(parents=True, exist_ok=True)
    dets = prepared.detections
    save_rgb(out, draw_faces(rgb, dets.boxes, dets.scores, dets.landmarks))
    if masked is not None:
        save_rgb(masked_path(out), masked)
    crops = []
    for index, crop in enumerate(prepared.crops):
        save_rgb(crop_path(out, index), crop)
        crops.append(crop_path(out, index))
    return Annotation(out, crops, [float(s) for s in dets.scores],
                      masked_path(out) if masked is not None else None, masks)
