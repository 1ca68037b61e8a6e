"""The JSON of faces as the ``/v1`` routes answer them: ``box`` ``[x1, y1, x2, y2]``, ``det_score`` (the
detector's confidence, never a match score), ``landmarks`` (five ``[x, y]``), ``embedding`` (512 floats); and
identification candidates with their ``similarity`` (cosine). Non-finite numbers become ``null``."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def face_record(output: dict[str, Any], row: int, *, embedding: bool = True, landmarks: bool = True) -> dict[str, Any]:
    """Face ``row`` of a pipeline output."""
    record: dict[str, Any] = {"box": [_number(v) for v in output["boxes"][row]],
                              "det_score": _number(output["scores"][row])}
    if landmarks:
        points = np.asarray(output["keypoints"][row], np.float64).reshape(5, 2)
        record["landmarks"] = [[_number(x), _number(y)] for x, y in points]
    if embedding:
        record["embedding"] = np.asarray(output["img_embedding"][row], np.float32).tolist()
    return record


def faces_of(output: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    """Every face of a pipeline output."""
    return [face_record(output, row, **options) for row in range(len(output["scores"]))]


def candidate_records(candidates: Any) -> list[dict[str, Any]]:
    """Gallery candidates as ``{"identity", "similarity"}``."""
    return [{"identity": c.identity, "similarity": _number(c.score)} for c in candidates]


def error_record(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
