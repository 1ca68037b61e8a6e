"""The picture ``/v1/identify?annotate`` returns: each face's box with its identity and similarity (the package's
drawing code), as a ``data:image/jpeg;base64,...`` URL."""
from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from ..drawing import BOX_COLOR, WARNING_COLOR, draw_box_labels

JPEG_QUALITY = 90


def face_label(face: dict[str, Any]) -> str:
    """``identity 0.83`` (or ``unknown 0.21``, or ``unknown`` on an empty gallery)."""
    similarity = face.get("similarity")
    return face["identity"] if similarity is None else f"{face['identity']} {similarity:.2f}"


def annotated_data_url(image_rgb: np.ndarray, faces: list[dict[str, Any]]) -> str:
    """``image_rgb`` with the faces' boxes and labels, JPEG-encoded as a data URL."""
    boxes = np.array([f["box"] for f in faces], np.float64).reshape(-1, 4)
    colors = [BOX_COLOR if f["identity"] != "unknown" else WARNING_COLOR for f in faces]
    drawn = draw_box_labels(image_rgb, boxes, [face_label(f) for f in faces], colors=colors)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the annotated picture as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
