"""The fidelity report of ``facemask quantize``: int8 against fp32 (torch) on images held out from calibration.

* recognizer on identical crops: the fp32 pipeline's aligned crops embedded by the fp32 and the int8 recognizer;
  min / median cosine over all faces.
* end to end: both pipelines on the images, all faces; faces matched one to one by box IoU >= 0.9 (greedy, highest
  IoU first), the rest counted as lost (fp32 only) or extra (int8 only); over matched faces the min / median cosine
  and the landmark deviation in px (per face the largest Euclidean distance of its five points; max / median).

Cosines are computed in float64 from the float32 unit rows. ``within_bounds`` compares with the bounds issue 17 set
(recognizer >= 0.999, end to end >= 0.995, no face lost); they were measured on synthetic weights, so read the
report of your own weights.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np

IOU_THRESHOLD = 0.9
BOUNDS = {"recognizer_min_cosine": 0.999, "end_to_end_min_cosine": 0.995, "faces_lost": 0}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) ``[x1, y1, x2, y2]`` boxes (continuous coordinates, no +1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_faces(reference: np.ndarray, other: np.ndarray, threshold: float = IOU_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one (reference row, other row) pairs with IoU >= ``threshold``, highest IoU first."""
    iou = box_iou(reference, other)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < threshold:
            break
        if i not in used_a and j not in used_b:
            pairs.append((int(i), int(j)))
            used_a.add(i)
            used_b.add(j)
    return sorted(pairs)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def landmark_px(a: np.ndarray, b: np.ndarray) -> float:
    """The largest Euclidean distance between corresponding points of two 10-value landmark rows, px."""
    a, b = np.asarray(a, np.float64).reshape(5, 2), np.asarray(b, np.float64).reshape(5, 2)
    return float(np.linalg.norm(a - b, axis=1).max())


def _summary(values: Sequence[float]) -> tuple[float | None, float | None]:
    return (min(values), statistics.median(values)) if values else (None, None)


def end_to_end(fp32: Sequence[dict[str, Any]], int8: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Faces matched / lost / extra, cosine and landmark px over matched faces of two pipelines' outputs."""
    cos, px, lost, extra, counts = [], [], 0, 0, [0, 0]
    for ref, got in zip(fp32, int8):
        pairs = match_faces(ref["boxes"], got["boxes"])
        counts[0] += len(ref["boxes"])
        counts[1] += len(got["boxes"])
        lost += len(ref["boxes"]) - len(pairs)
        extra += len(got["boxes"]) - len(pairs)
        for i, j in pairs:
            cos.append(float(cosines(ref["img_embedding"][i : i + 1], got["img_embedding"][j : j + 1])[0]))
            px.append(landmark_px(ref["keypoints"][i], got["keypoints"][j]))
    low, mid = _summary(cos)
    return {"faces_fp32": counts[0], "faces_int8": counts[1], "matched": len(cos), "lost": lost, "extra": extra,
            "min_cosine": low, "median_cosine": mid, "landmark_px_max": max(px, default=None),
            "landmark_px_median": statistics.median(px) if px else None}


def fidelity_report(images: Sequence[str], fp32_crops: np.ndarray, int8_crops: np.ndarray,
                    fp32: Sequence[dict[str, Any]], int8: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report: ``fp32_crops``/``int8_crops`` are the two recognizers' embeddings of the same crops; ``fp32`` /
    ``int8`` the two pipelines' outputs on ``images`` (all faces)."""
    crop_cos = cosines(fp32_crops, int8_crops).tolist() if len(fp32_crops) else []
    low, mid = _summary(crop_cos)
    e2e = end_to_end(fp32, int8)
    within = {"recognizer_min_cosine": low is not None and low >= BOUNDS["recognizer_min_cosine"],
              "end_to_end_min_cosine": e2e["min_cosine"] is not None
              and e2e["min_cosine"] >= BOUNDS["end_to_end_min_cosine"],
              "faces_lost": e2e["lost"] <= BOUNDS["faces_lost"]}
    return {"held_out_images": list(images), "iou_threshold": IOU_THRESHOLD,
            "recognizer_identical_crops": {"faces": len(crop_cos), "min_cosine": low, "median_cosine": mid},
            "end_to_end": e2e, "bounds": dict(BOUNDS), "within_bounds": within}


def report_text(report: dict[str, Any]) -> str:
    """The report in a few lines."""
    def num(value: Any, digits: int = 6) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rec, e2e = report["recognizer_identical_crops"], report["end_to_end"]
    ok = "within the bounds" if all(report["within_bounds"].values()) else \
        "OUTSIDE the bounds: " + ", ".join(k for k, v in report["within_bounds"].items() if not v)
    return "\n".join([
        f"fidelity, int8 vs fp32 on {len(report['held_out_images'])} held-out image(s):",
        f"  recognizer, identical crops: {rec['faces']} faces, min cosine {num(rec['min_cosine'])}, "
        f"median {num(rec['median_cosine'])}",
        f"  end to end: faces {e2e['faces_fp32']} fp32 / {e2e['faces_int8']} int8, matched (IoU >= "
        f"{report['iou_threshold']}) {e2e['matched']}, lost {e2e['lost']}, extra {e2e['extra']}",
        f"    min cosine {num(e2e['min_cosine'])}, median {num(e2e['median_cosine'])}; landmark px max "
        f"{num(e2e['landmark_px_max'], 3)}, median {num(e2e['landmark_px_median'], 3)}",
        f"  {ok} (recognizer >= {report['bounds']['recognizer_min_cosine']}, end to end >= "
        f"{report['bounds']['end_to_end_min_cosine']}, no face lost)",
    ])
