"""Synthetic surgical-mask-like face masks drawn from the five landmarks, for masked-face evaluation.

**Where a mask is applied: on the photo, before detection.** A real masked probe goes through detection and
alignment with the mask on, so detector misses and landmark shifts caused by the mask count in the evaluation (the
protocol behind the card's MFR-ALL column: masked probes against an unmasked gallery). Masking the aligned 112x112
crop instead would measure the recognizer alone. The intended use: detect on the unmasked photo, draw the masks at
those landmarks with :func:`draw_masks`, run the whole pipeline on the masked photo.

**Geometry.** Everything is placed in a face frame, so the mask follows the face's in-plane rotation (roll), position
and size (it is exactly equivariant under rotation, scale and translation of the landmarks):

- *axes*: x along the eye line and mouth line (``(right eye - left eye) + (right mouth - left mouth)``), y
  perpendicular to it, pointing from the eyes to the mouth; origin at the nose tip.
- *units*: ``d``, the eye-to-mouth distance along y; ``h``, the eye-line-to-nose-tip distance along y (at least
  ``0.25 d``).
- *top edge*: peaks above the nose tip, a fraction ``style.top`` (0.35-0.60) of the way from the nose tip up to the
  eye line, so the nose tip and its lower half are always covered and the top edge passes between the eye line and
  the nose tip; it falls (parabola-like) to the face sides, where it sits ``style.side_top * h`` (0-0.2 h) above the
  nose tip. So the whole top edge stays at least ``0.4 h`` below the eye line (the eyes themselves, further out to
  the sides, by more: checked with a disc of 0.2 interocular around each eye on real portraits in the tests).
- *sides*: the face sides, ``style.width * (0.5 * interocular + eye-to-nose distance on that side)`` from the nose
  tip (so a turned face gets a narrower far side), widened if needed to clear each mouth corner by ``0.2 d``.
- *bottom*: the jaw corners ``0.25 d`` below the lower mouth corner, then a half-ellipse through the chin,
  estimated ``style.chin * d`` (0.85-1.05) below the mouth centre.

**Rendering.** A flat seeded colour with optional horizontal pleat lines, composited through an anti-aliased
coverage plane (``cv2.fillPoly`` with ``LINE_AA`` on 1/16 px fixed point), filled on a canvas around the mask and
cut to the image: faces partly or wholly outside the image are fine, and a crop of a masked photo equals the mask
drawn on the crop, pixel for pixel. Masks far larger than the image are clipped to it first. Only the mask's box is
touched (a few ms per face on the portraits here; the whole-image copy dominates on large photos).

**Determinism.** The style is chosen from small tables by integer draws of ``numpy.random.default_rng(seed)``;
geometry uses only +, -, *, / and sqrt on float64 (no trigonometry at runtime, no BLAS), rounded half-to-even onto
the 1/16 px grid; compositing is integer arithmetic. A seed gives the same pixels on every run and machine (for a
given OpenCV version); nothing else is random.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import AlignmentError, ConfigurationError, ImageLoadError

#: seeded colour variants (RGB): name -> colour
COLORS = {
    "light blue": (134, 188, 222),
    "white": (236, 238, 240),
    "black": (36, 37, 41),
    "grey": (132, 136, 142),
    "surgical green": (128, 192, 172),
    "pink": (232, 182, 196),
}
TOPS = (0.35, 0.45, 0.55, 0.60)       # top edge above the nose tip, fraction of the nose-tip-to-eye-line distance
SIDE_TOPS = (0.0, 0.10, 0.20)         # top corners at the face sides, above the nose tip, in the same units
CHINS = (0.85, 0.95, 1.05)            # chin below the mouth centre, fraction of the eye-to-mouth distance
WIDTHS = (1.00, 1.10, 1.20)           # face-side multiplier
PLEATS = (0, 2, 3)                    # number of horizontal pleat lines

FIXED_POINT_SHIFT = 4                 # cv2 sub-pixel bits: coordinates on a 1/16 px grid
_ONE = 1 << FIXED_POINT_SHIFT
# cos and sin of 0, 15, ..., 90 degrees as literals (no libm at runtime: identical on every machine)
_COS = (1.0, 0.9659258262890683, 0.8660254037844387, 0.7071067811865476, 0.5, 0.25881904510252074, 0.0)
_SIN = (0.0, 0.25881904510252074, 0.5, 0.7071067811865476, 0.8660254037844387, 0.9659258262890683, 1.0)
_TOP_SAMPLES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class MaskStyle:
    """One seeded mask variant: colour and shape parameters (units in the module docstring)."""

    color_name: str
    color: tuple[int, int, int]
    pleat_color: tuple[int, int, int]
    top: float
    side_top: float
    chin: float
    width: float
    pleats: int


def check_seed(seed: object, *, where: str = "seed") -> int:
    """``seed`` as a non-negative int; :class:`ConfigurationError` otherwise."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigurationError(f"{where} must be a non-negative integer, got {seed!r}")
    return int(seed)


def mask_style(seed: int = 0) -> MaskStyle:
    """The mask variant for ``seed`` (integer draws from ``numpy.random.default_rng(seed)`` into fixed tables)."""
    rng = np.random.default_rng(check_seed(seed))
    name = list(COLORS)[int(rng.integers(len(COLORS)))]
    color = COLORS[name]
    pleat = tuple(c * 3 // 4 if sum(color) > 200 else min(255, c + 40) for c in color)
    return MaskStyle(
        color_name=name, color=color, pleat_color=pleat,  # type: ignore[arg-type]
        top=TOPS[int(rng.integers(len(TOPS)))], side_top=SIDE_TOPS[int(rng.integers(len(SIDE_TOPS)))],
        chin=CHINS[int(rng.integers(len(CHINS)))], width=WIDTHS[int(rng.integers(len(WIDTHS)))],
        pleats=PLEATS[int(rng.integers(len(PLEATS)))],
    )


def _landmarks64(landmarks: np.ndarray, label: str = "landmarks") -> np.ndarray:
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AlignmentError(f"{label} must be numbers, (5, 2) or (10,) image pixels: {exc}") from None
    if points.shape not in ((5, 2), (10,)):
        raise AlignmentError(f"{label} must be (5, 2) or (10,) (left eye, right eye, nose tip, left and right mouth "
                             f"corner, x and y in pixels), got shape {points.shape}")
    points = points.reshape(5, 2)
    if not np.all(np.isfinite(points)):
        raise AlignmentError(f"{label} hold NaN or Inf ({points.reshape(-1).tolist()}): no mask can be placed; "
                             "drop this face (use_det=False outputs have no landmarks)")
    return points


class _Frame:
    """The face frame: origin at the nose tip, unit axes ``ex`` (eye line) and ``ey`` (towards the mouth)."""

    def __init__(self, points: np.ndarray, label: str) -> None:
        left_eye, right_eye, nose, left_mouth, right_mouth = points
        axis = (right_eye - left_eye) + (right_mouth - left_mouth)
        length = float(np.sqrt(axis[0] * axis[0] + axis[1] * axis[1]))
        if not length > 0.0:
            raise AlignmentError(f"{label}: the eyes and the mouth corners coincide ({points.tolist()}); "
                                 "no face direction to place a mask on")
        self.origin = nose
        self.ex = axis / length
        self.ey = np.array([-self.ex[1], self.ex[0]])
        eyes, mouth = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
        if self.v(mouth) - self.v(eyes) < 0:  # landmarks given mirrored: keep y pointing from eyes to mouth
            self.ey = -self.ey
        self.d = self.v(mouth) - self.v(eyes)
        if not self.d > 1e-3 * length:
            raise AlignmentError(f"{label}: the mouth lies on the eye line ({points.tolist()}); "
                                 "not a face to place a mask on")

    def u(self, p: np.ndarray) -> float:
        return float((p[0] - self.origin[0]) * self.ex[0] + (p[1] - self.origin[1]) * self.ex[1])

    def v(self, p: np.ndarray) -> float:
        return float((p[0] - self.origin[0]) * self.ey[0] + (p[1] - self.origin[1]) * self.ey[1])

    def to_pixels(self, uv: np.ndarray) -> np.ndarray:
        x = self.origin[0] + uv[:, 0] * self.ex[0] + uv[:, 1] * self.ey[0]
        y = self.origin[1] + uv[:, 0] * self.ex[1] + uv[:, 1] * self.ey[1]
        return np.stack([x, y], axis=1)


def _mask_outline(points: np.ndarray, style: MaskStyle, label: str) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Polygon (P, 2) float64 in pixels, the pleat quadrilaterals, and the eye-to-mouth distance ``d``."""
    frame = _Frame(points, label)
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    d = frame.d
    eye_v = (frame.v(left_eye) + frame.v(right_eye)) / 2
    h = max(-eye_v, 0.25 * d)                                   # eye line to nose tip
    interocular = frame.u(right_eye) - frame.u(left_eye)
    half = max(0.5 * interocular, 0.25 * d)
    mouth_u = (frame.u(left_mouth) + frame.u(right_mouth)) / 2
    mouth_v = (frame.v(left_mouth) + frame.v(right_mouth)) / 2
    jaw_v = max(frame.v(left_mouth), frame.v(right_mouth)) + 0.25 * d
    side_top_v = -style.side_top * h
    # per-side half widths from the nose tip: the eye's distance to the nose on that side plus half the interocular
    width_left = style.width * (half + max(-frame.u(left_eye), 0.0))
    width_right = style.width * (half + max(frame.u(right_eye), 0.0))
    # the side edge at mouth height is at least 0.85 of the width: clear each mouth corner by 0.2 d
    width_left = max(width_left, (max(-frame.u(left_mouth), 0.0) + 0.2 * d) / 0.85)
    width_right = max(width_right, (max(frame.u(right_mouth), 0.0) + 0.2 * d) / 0.85)
    top_v = -style.top * h
    chin_v = max(mouth_v + style.chin * d, jaw_v + 0.1 * d)

    uv: list[tuple[float, float]] = []
    for s in _TOP_SAMPLES[::-1]:                                # top edge, left side to the nose
        uv.append((-s * width_left, top_v + (side_top_v - top_v) * (0.4 * s + 0.6 * s * s)))
    for s in _TOP_SAMPLES[1:]:                                  # nose to the right side
        uv.append((s * width_right, top_v + (side_top_v - top_v) * (0.4 * s + 0.6 * s * s)))
    jaw_right, jaw_left = 0.85 * width_right, -0.85 * width_left
    for c, s in zip(_COS, _SIN):                                # right jaw corner down to the chin
        uv.append((mouth_u + (jaw_right - mouth_u) * c, jaw_v + (chin_v - jaw_v) * s))
    for c, s in zip(_COS[-2::-1], _SIN[-2::-1]):                # chin up to the left jaw corner
        uv.append((mouth_u + (jaw_left - mouth_u) * c, jaw_v + (chin_v - jaw_v) * s))
    polygon = frame.to_pixels(np.array(uv, dtype=np.float64))

    pleats = []
    thickness = max(d / 40, 0.75)
    for k in range(style.pleats):
        v = side_top_v + (jaw_v - side_top_v) * (k + 1) / (style.pleats + 1)
        u0, u1 = -width_left - 0.1 * d, width_right + 0.1 * d
        pleats.append(frame.to_pixels(np.array([(u0, v - thickness / 2), (u1, v - thickness / 2),
                                                (u1, v + thickness / 2), (u0, v + thickness / 2)])))
    if not np.all(np.isfinite(polygon)):
        raise AlignmentError(f"{label} are too large to place a mask ({points.reshape(-1).tolist()})")
    return polygon, pleats, d


def mask_polygon(landmarks: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The mask outline (P, 2) float32 in the landmarks' pixels, for five landmarks ``(5, 2)`` or ``(10,)`` (left eye,
    right eye, nose tip, left and right mouth corner). Unclipped: it may extend past the image.
    Raises :class:`AlignmentError` for a wrong shape, NaN/Inf or degenerate landmarks."""
    polygon, _, _ = _mask_outline(_landmarks64(landmarks), mask_style(seed), "landmarks")
    return polygon.astype(np.float32)


def _clip_polygon(polygon: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of ``polygon`` (P, 2) to the rectangle [x0, x1] x [y0, y1]."""
    points = [tuple(p) for p in polygon]
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not points:
            break
        inside = [(p[axis] >= bound) if keep_above else (p[axis] <= bound) for p in points]
        clipped = []
        for i, p in enumerate(points):
            q, q_in = points[i - 1], inside[i - 1]
            if inside[i] != q_in:
                t = (bound - q[axis]) / (p[axis] - q[axis])
                cut = [q[0] + (p[0] - q[0]) * t, q[1] + (p[1] - q[1]) * t]
                cut[axis] = bound
                clipped.append(tuple(cut))
            if inside[i]:
                clipped.append(p)
        points = clipped
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def _fixed_point(polygon: np.ndarray) -> np.ndarray:
    return np.round(polygon * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageLoadError(f"image_rgb must be a non-empty HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
    return image


def _keypoint_rows(keypoints: np.ndarray) -> np.ndarray:
    try:
        rows = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AlignmentError(f"keypoints must be numbers, (N, 10) or (N, 5, 2) image pixels: {exc}") from None
    if rows.ndim not in (2, 3) or rows.shape[1:] not in ((10,), (5, 2)):
        raise AlignmentError(f"keypoints must be (N, 10) or (N, 5, 2) (the pipeline's keypoints; for one face pass "
                             f"keypoints[None]), got shape {rows.shape}")
    return rows.reshape(len(rows), 5, 2)


def _canvas_box(polygon: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int, int, int] | None:
    """The polygon to fill and its canvas ``(left, top, right, bottom)`` in image pixels (may extend past the image).

    A mask no larger than about twice the image is filled on a canvas around the whole polygon and then cut to the
    image, so a crop of a masked photo equals the mask drawn on the crop, pixel for pixel. Larger ones are first
    clipped to the image plus a 16 px margin (the canvas stays small; the anti-aliased clip edges fall outside)."""
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    if high[0] < -2 or high[1] < -2 or low[0] > width + 1 or low[1] > height + 1:
        return None
    if high[0] - low[0] > 2 * width + 64 or high[1] - low[1] > 2 * height + 64:
        polygon = _clip_polygon(polygon, -16.0, -16.0, width + 15.0, height + 15.0)
        if len(polygon) < 3:
            return None
        low, high = polygon.min(axis=0), polygon.max(axis=0)
    left, top = int(np.floor(low[0])) - 2, int(np.floor(low[1])) - 2
    right, bottom = int(np.ceil(high[0])) + 3, int(np.ceil(high[1])) + 3
    return polygon, left, top, right, bottom


def _draw_one(out: np.ndarray, polygon: np.ndarray, pleats: list[np.ndarray], style: MaskStyle) -> None:
    """Composite one mask into ``out`` in place (only the pixels of the mask's box)."""
    height, width = out.shape[:2]
    box = _canvas_box(polygon, height, width)
    if box is None:
        return
    polygon, left, top, right, bottom = box
    offset = np.array([left, top], dtype=np.float64)
    coverage = np.zeros((bottom - top, right - left), np.uint8)
    cv2.fillPoly(coverage, [_fixed_point(polygon - offset)], 255, cv2.LINE_AA, FIXED_POINT_SHIFT)
    layer = np.empty((bottom - top, right - left, 3), np.uint8)
    layer[:] = style.color
    canvas = (-1.0, -1.0, right - left + 1.0, bottom - top + 1.0)
    for pleat in pleats:
        piece = _clip_polygon(pleat - offset, *canvas)  # pleats overhang the mask: keep them on its canvas
        if len(piece) >= 3:
            cv2.fillPoly(layer, [_fixed_point(piece)], style.pleat_color, cv2.LINE_AA, FIXED_POINT_SHIFT)
    # the part of the canvas inside the image
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = coverage[y0 - top : y1 - top, x0 - left : x1 - left, None].astype(np.uint16)
    blend = layer[y0 - top : y1 - top, x0 - left : x1 - left].astype(np.uint16)
    blend *= alpha
    alpha = 255 - alpha
    roi = out[y0:y1, x0:x1]
    alpha = roi * alpha  # uint16: at most 255 * 255 in total, no overflow
    blend += alpha
    blend += 127
    blend //= 255  # rounded (image * (255 - a) + paint * a) / 255
    roi[:] = blend


def draw_masks(image_rgb: np.ndarray, keypoints: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A copy of ``image_rgb`` (HxWx3 uint8 RGB) with a synthetic mask on every face; the input is untouched.

    ``keypoints`` (N, 10) or (N, 5, 2) in that image's pixels (the pipeline's ``keypoints``); face ``i`` gets the
    variant of seed ``seed + i``; later faces are drawn over earlier ones. Faces partly or wholly outside the image
    are clipped. Every face is checked before anything is drawn: :class:`AlignmentError` (a ``ValueError``) names a
    face with NaN/Inf or degenerate landmarks, :class:`ImageLoadError` a wrong image, :class:`ConfigurationError` a
    negative seed.
    """
    image = _check_image(image_rgb)
    rows = _keypoint_rows(keypoints)
    seed = check_seed(seed)
    styles = [mask_style(seed + i) for i in range(len(rows))]
    outlines = [_mask_outline(_landmarks64(points, f"keypoints of face {i}"), style, f"face {i}")
                for i, (points, style) in enumerate(zip(rows, styles))]  # all checked before drawing
    out = image.copy()
    for (polygon, pleats, _), style in zip(outlines, styles):
        _draw_one(out, polygon, pleats, style)
    return out


__all__ = ["COLORS", "MaskStyle", "check_seed", "draw_masks", "mask_polygon", "mask_style"]
