"""Pictures of what the pipeline saw: boxes, scores and landmarks on an image; strips of aligned crops; banners.

Pure OpenCV/numpy on RGB uint8 arrays; every function returns a new array and leaves its input untouched.
Write the results with ``cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))`` (or :func:`save_rgb`).
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

#: colours (RGB)
BOX_COLOR = (0, 220, 0)
#: left eye, right eye, nose, left mouth corner, right mouth corner (image left/right, as the landmarks are ordered)
LANDMARK_COLORS = ((255, 60, 60), (60, 120, 255), (255, 220, 0), (255, 0, 255), (0, 230, 230))
WARNING_COLOR = (255, 40, 40)
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
CROP_GAP = 4


def _check_rgb(image: np.ndarray, name: str = "image_rgb") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
    return image


def _line_width(image: np.ndarray) -> int:
    return max(1, round(max(image.shape[:2]) / 400))


def fitted_font_scale(text: str, width: int, *, thickness: int = 1, max_scale: float = 1.0) -> float:
    """The largest font scale (up to ``max_scale``) at which ``text`` fits in ``width`` pixels."""
    (text_width, _), _ = cv2.getTextSize(text, FONT, 1.0, thickness)
    return max(0.2, min(max_scale, width / max(text_width, 1)))


def draw_faces(image_rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of ``image_rgb`` with each face's box, score and five landmarks drawn.

    ``boxes`` (N, 4) ``[x1, y1, x2, y2]``, ``scores`` (N,), ``landmarks`` (N, 10) ``[x0, y0, ..., x4, y4]``, in
    the image's pixels (the pipeline's ``boxes``, ``scores`` and ``keypoints``). NaN scores or landmarks (no
    detector ran) are not drawn.
    """
    out = _check_rgb(image_rgb).copy()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 10)
    if not len(boxes) == len(scores) == len(landmarks):
        raise ValueError(f"boxes, scores and landmarks need one row per face: {len(boxes)}, {len(scores)}, {len(landmarks)}")
    width = _line_width(out)
    for box, score, points in zip(boxes, scores, landmarks):
        if not np.all(np.isfinite(box)):
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, width, cv2.LINE_8)
        if np.isfinite(score):
            label = f"{score:.3f}"
            scale = fitted_font_scale(label, max(x2 - x1, 40) // 2, thickness=width, max_scale=0.4 * width + 0.2)
            (tw, th), base = cv2.getTextSize(label, FONT, scale, width)
            top = max(y1 - th - base - 2, 0)
            cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), BOX_COLOR, -1)
            cv2.putText(out, label, (x1 + 2, top + th + 1), FONT, scale, (0, 0, 0), width, cv2.LINE_AA)
        if np.all(np.isfinite(points)):
            radius = max(2, round(max(x2 - x1, y2 - y1) / 40))
            for (px, py), color in zip(points.reshape(5, 2), LANDMARK_COLORS):
                cv2.circle(out, (int(round(px)), int(round(py))), radius, color, -1, cv2.LINE_AA)
    return out


def draw_box_labels(image_rgb: np.ndarray, boxes: np.ndarray, labels: Sequence[str], *,
                    colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A copy of ``image_rgb`` with each box ``[x1, y1, x2, y2]`` drawn and its label above it (non-ASCII
    characters drawn as ``?``: OpenCV's fonts are ASCII); ``colors``: one per box (default :data:`BOX_COLOR`)."""
    out = _check_rgb(image_rgb).copy()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(labels) != len(boxes) or (colors is not None and len(colors) != len(boxes)):
        raise ValueError(f"one label (and colour) per box: {len(boxes)} boxes, {len(labels)} labels")
    width = _line_width(out)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        if not np.all(np.isfinite(box)):
            continue
        color = colors[i] if colors is not None else BOX_COLOR
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, width, cv2.LINE_8)
        text = str(label).encode("ascii", "replace").decode("ascii")
        if not text:
            continue
        scale = fitted_font_scale(text, max(x2 - x1, 80), thickness=width, max_scale=0.4 * width + 0.2)
        (tw, th), base = cv2.getTextSize(text, FONT, scale, width)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(out, text, (x1 + 2, top + th + 1), FONT, scale, (0, 0, 0), width, cv2.LINE_AA)
    return out


def crops_strip(crops: np.ndarray | Sequence[np.ndarray], labels: Sequence[str] | None = None, *,
                gap: int = CROP_GAP) -> np.ndarray:
    """The aligned crops (N, S, S, 3) side by side with ``gap`` px of white between them, optionally labelled.

    No crops give one grey tile reading "no face", so the result is always a drawable image.
    """
    crops = [_check_rgb(np.asarray(c), "crop") for c in crops]
    if not crops:
        tile = np.full((112, 112, 3), 160, np.uint8)
        cv2.putText(tile, "no face", (18, 62), FONT, 0.5, TEXT_COLOR, 1, cv2.LINE_AA)
        return tile
    if labels is not None and len(labels) != len(crops):
        raise ValueError(f"{len(labels)} labels for {len(crops)} crops")
    height = max(c.shape[0] for c in crops)
    tiles = []
    for i, crop in enumerate(crops):
        tile = np.full((height, crop.shape[1], 3), 255, np.uint8)
        tile[: crop.shape[0]] = crop
        if labels is not None and labels[i]:
            tile = label_above(tile, labels[i])
        tiles.append(tile)
    height = max(t.shape[0] for t in tiles)
    parts = []
    for i, tile in enumerate(tiles):
        padded = np.full((height, tile.shape[1], 3), 255, np.uint8)
        padded[: tile.shape[0]] = tile
        parts.append(padded)
        if i < len(tiles) - 1:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def label_above(image_rgb: np.ndarray, text: str, *, color: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    """``image_rgb`` with a white band above it holding ``text`` (shrunk to the image's width)."""
    image = _check_rgb(image_rgb)
    scale = fitted_font_scale(text, image.shape[1] - 4, max_scale=0.45)
    (_, th), base = cv2.getTextSize(text, FONT, scale, 1)
    band = np.full((th + base + 6, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (2, th + 3), FONT, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def banner(width: int, lines: Sequence[str], *, color: tuple[int, int, int] = WARNING_COLOR,
           thickness: int = 1, max_scale: float = 0.7) -> np.ndarray:
    """A ``width`` px wide band of ``color`` holding ``lines`` of white text, shrunk to fit the width."""
    scale = min(fitted_font_scale(line, width - 8, thickness=thickness, max_scale=max_scale) for line in lines)
    sizes = [cv2.getTextSize(line, FONT, scale, thickness) for line in lines]
    line_height = max(th + base for (_, th), base in sizes) + 4
    band = np.empty((line_height * len(lines) + 4, width, 3), np.uint8)
    band[:] = color
    for i, (line, ((_, th), _)) in enumerate(zip(lines, sizes)):
        cv2.putText(band, line, (4, 2 + i * line_height + th + 2), FONT, scale, TEXT_COLOR, thickness, cv2.LINE_AA)
    return band


def draw_banner(image_rgb: np.ndarray, lines: Sequence[str], *, color: tuple[int, int, int] = WARNING_COLOR,
                position: str = "bottom") -> np.ndarray:
    """A copy of ``image_rgb`` (same size, so pixel coordinates stay valid) with :func:`banner` laid over its
    ``"top"`` or ``"bottom"`` edge (85 % opaque)."""
    out = _check_rgb(image_rgb).copy()
    if position not in ("top", "bottom"):
        raise ValueError(f"position must be 'top' or 'bottom', got {position!r}")
    thickness = _line_width(out)
    band = banner(out.shape[1], lines, color=color, thickness=thickness, max_scale=0.25 + 0.3 * thickness)
    band = band[: out.shape[0]]
    rows = slice(0, len(band)) if position == "top" else slice(out.shape[0] - len(band), out.shape[0])
    out[rows] = np.round(0.15 * out[rows].astype(np.float32) + 0.85 * band.astype(np.float32)).astype(np.uint8)
    return out


def stack_rows(images: Sequence[np.ndarray], *, gap: int = 8) -> np.ndarray:
    """Images one below the other on white, left-aligned, ``gap`` px apart."""
    images = [_check_rgb(np.asarray(im)) for im in images]
    if not images:
        raise ValueError("stack_rows needs at least one image")
    width = max(im.shape[1] for im in images)
    parts = []
    for i, im in enumerate(images):
        row = np.full((im.shape[0], width, 3), 255, np.uint8)
        row[:, : im.shape[1]] = im
        parts.append(row)
        if i < len(images) - 1:
            parts.append(np.full((gap, width, 3), 255, np.uint8))
    return np.concatenate(parts, axis=0)


def can_write_image(path: str | os.PathLike) -> bool:
    """True when OpenCV has a writer for the suffix of ``path`` (e.g. .png, .jpg, .bmp, .webp, .tif)."""
    return bool(cv2.haveImageWriter(os.fspath(path)))


def save_rgb(path: str | os.PathLike, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the file suffix) atomically; :class:`OSError` when OpenCV cannot."""
    from ..support.atomic_files import writing_file

    bgr = cv2.cvtColor(_check_rgb(image_rgb), cv2.COLOR_RGB2BGR)
    if not can_write_image(path):
        raise OSError(f"cannot write the image {os.fspath(path)!r}: no image format for the suffix "
                      f"{os.path.splitext(os.fspath(path))[1] or '(none)'!r}; use .png or .jpg")
    with writing_file(path) as tmp:  # the temporary name keeps the suffix, which chooses the format
        try:
            written = cv2.imwrite(os.fspath(tmp), bgr)
        except cv2.error as exc:
            raise OSError(f"could not write the image {os.fspath(path)!r}: {exc}") from None
        if not written:
            raise OSError(f"could not write the image {os.fspath(path)!r} (unwritable folder?)")


__all__ = ["banner", "can_write_image", "crops_strip", "draw_banner", "draw_faces", "fitted_font_scale", "label_above", "save_rgb", "stack_rows"]
