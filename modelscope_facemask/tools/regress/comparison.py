"""The check: the pipeline's current outputs compared with a reference, field by field, and its outcome.

Five things are compared per face (faces are paired by nearest landmarks; a different face count is a regression):
the end-to-end embedding (cosine), the recognizer alone (cosine between the reference embedding and the embedding of
the crop aligned on the *reference* landmarks, which removes detector jitter and so can be far tighter), landmarks
and boxes (max |difference| in pixels) and scores (max |difference|). NaN or Inf anywhere in the reference or in the
current output is a failure of that image and field; where a ``use_det=False`` reference records NaN scores and
landmarks, they match when both are entirely NaN. Outcomes: ``pass``, ``regression`` and ``dependency-change``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import FaceMaskError
from .provenance import run_metadata
from .record import pipeline_outputs
from .reference_file import FACE_FIELDS, Reference, describe_values, nan_allowed
from .tolerances import DEPENDENCY_CHANGE, Tolerances, choose_tolerances, dependency_changes

#: what one face of one field compared to: (face index, difference or None, problem when None)
FaceValue = tuple[int, float | None, str]


@dataclass
class ImageResult:
    """Worst value per field for one image, and what failed."""

    image: str
    faces_reference: int
    faces_now: int
    worst: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: fields where a value was NaN or Inf (or a cosine undefined): they fail whatever the tolerance
    non_finite: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """Outcome of a check: ``status`` (``pass``, ``dependency-change`` or ``regression``), per-image results, warnings,
    and the tolerances applied.

    ``dependency-change``: the outputs moved beyond the limits of ``preset`` but stay within :data:`DEPENDENCY_CHANGE`,
    the weights and the contract are the reference's, and a numeric dependency has another version
    (``dependency_changes``). ``tolerances``, ``preset`` and ``images`` are then those of the dependency-change
    judgement, and ``moved`` holds the failures under the same-version limits.
    """

    reference: str
    tolerances: Tolerances
    preset: str
    images: list[ImageResult]
    warnings: list[str]
    notes: list[str]
    dependency_changes: list[str] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for r in self.images for f in r.failures]

    @property
    def status(self) -> str:
        if self.failures:
            return "regression"
        return "dependency-change" if self.moved else "pass"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reference": self.reference,
                "tolerance_preset": self.preset, "tolerances": asdict(self.tolerances), "warnings": self.warnings,
                "notes": self.notes, "dependency_changes": self.dependency_changes, "moved": self.moved,
                "images": [asdict(r) for r in self.images], "failures": self.failures}


# ---------------------------------------------------------------------- comparing values
def one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity, in float64 (exactly 0 for identical rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.maximum(1.0 - cos, 0.0)


def compare_values(field_name: str, ref: np.ndarray, now: np.ndarray, use_det: bool) -> tuple[float | None, str]:
    """(difference, "") for finite values (1-cos for embeddings, else max |difference|), or (None, problem) when
    either side holds NaN/Inf. Where NaN is legitimate (``use_det=False`` scores/landmarks) both entirely NaN is
    a match (0.0)."""
    ref, now = np.asarray(ref, np.float64), np.asarray(now, np.float64)
    ref_ok, now_ok = bool(np.isfinite(ref).all()), bool(np.isfinite(now).all())
    if nan_allowed(field_name, use_det) and np.isnan(ref).all() and np.isnan(now).all():
        return 0.0, ""
    if not (ref_ok and now_ok):
        return None, f"reference {describe_values(ref)}, current output {describe_values(now)}"
    value = float(one_minus_cos(ref, now)) if field_name == "embedding" else float(np.abs(ref - now).max(initial=0.0))
    if not np.isfinite(value):
        return None, "cosine undefined (an all-zero embedding)"
    return value, ""


class _KnownFaces:
    """A stand-in detector that "finds" given faces, so ``prepare_faces`` aligns them exactly as the pipeline does."""

    def __init__(self, detections: Any) -> None:
        self.detections = detections

    def detect(self, images: Sequence[np.ndarray]) -> list[Any]:
        return [self.detections for _ in images]


def recognizer_values(pipeline: Any, path: Path, reference: Reference, rows: slice,
                      use_det: bool) -> list[FaceValue]:
    """Per reference face: 1-cos between the reference embedding and the pipeline's alignment + recognizer applied
    at the *reference* face position, or (None, problem) when that cannot be computed or is not finite."""
    from ...faces.detections import Detections
    from ...faces.images import load_image
    from ...faces.prepare import prepare_faces

    image = load_image(path)
    results: list[FaceValue] = []
    for face, row in enumerate(range(rows.start, rows.stop)):
        position = [reference.boxes[row], reference.landmarks[row]] if use_det else []
        if not all(np.isfinite(v).all() for v in position):
            results.append((face, None, "not computed: the reference face position is not finite"))
            continue
        try:
            if use_det:
                known = _KnownFaces(Detections(reference.boxes[row:row + 1], np.ones(1, np.float32),
                                               reference.landmarks[row:row + 1]))
                crops = prepare_faces([image], known, max_faces=1, min_face_size=0.0)[0].crops
            else:
                crops = prepare_faces([image], None)[0].crops
        except FaceMaskError as exc:
            results.append((face, None, f"not computed: cannot align on the reference landmarks ({exc})"))
            continue
        embedding, finite = pipeline.model.embed_rows(crops)
        if not finite.all():
            results.append((face, None, "the recognizer produced a non-finite embedding"))
            continue
        value, problem = compare_values("embedding", reference.embeddings[row], embedding[0], use_det)
        results.append((face, value, problem))
    return results


def _pair_faces(reference: np.ndarray, current: np.ndarray) -> list[tuple[int, int]]:
    """Greedy pairing of reference and current faces by mean landmark distance (non-finite landmarks: by index)."""
    if not (np.isfinite(reference).all() and np.isfinite(current).all()):
        return [(i, i) for i in range(min(len(reference), len(current)))]
    cost = np.abs(reference[:, None, :] - current[None, :, :]).mean(-1)
    pairs, used_ref, used_cur = [], set(), set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, cost.shape)
        if i not in used_ref and j not in used_cur:
            pairs.append((int(i), int(j)))
            used_ref.add(i)
            used_cur.add(j)
    return sorted(pairs)


# ---------------------------------------------------------------------- the check
def _metadata_warnings(reference: Reference, now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(warnings, notes): contract or weights that differ from the reference's (outputs are expected to differ),
    and versions, device or precision that changed."""
    ref = reference.metadata
    warnings, notes = [], []
    if ref.get("contract_sha256") != now["contract_sha256"]:
        keys = sorted(k for k in set(ref.get("contract", {})) | set(now["contract"])
                      if ref.get("contract", {}).get(k) != now["contract"].get(k))
        warnings.append(f"embedding contract differs from the reference's (sha256 "
                        f"{str(ref.get('contract_sha256'))[:12]} vs {now['contract_sha256'][:12]}; changed: "
                        f"{', '.join(keys)}): outputs are expected to differ")
    for role, entry in now["weights"].items():
        old = ref.get("weights", {}).get(role, {})
        if old.get("sha256") != entry["sha256"]:
            warnings.append(f"{role} weights differ from the reference's ({entry['file']} sha256 "
                            f"{entry['sha256'][:12]} vs {str(old.get('sha256'))[:12]})")
    changed = [f"{k} {ref.get('versions', {}).get(k, '(not recorded)')} -> {v}" for k, v in now["versions"].items()
               if ref.get("versions", {}).get(k) != v]
    if changed:
        notes.append("versions changed since the reference: " + ", ".join(changed))
    if (ref.get("device"), ref.get("precision")) != (now["device"], now["precision"]):
        notes.append(f"reference made on {ref.get('device')} ({ref.get('precision')}), checking on {now['device']} "
                     f"({now['precision']})")
    return warnings, notes


def check_reference(pipeline: Any, reference: Reference, images: Mapping[str, Path], *, reference_path: str = "",
                    overrides: Mapping[str, float | None] | None = None) -> CheckReport:
    """Re-run ``pipeline`` on the reference's images and compare field by field (see the module docstring)."""
    max_faces = reference.metadata["contract"]["max_faces"]
    now = run_metadata(pipeline, max_faces)
    tolerances, preset = choose_tolerances(reference, now["device"], now["precision"], overrides)
    warnings, notes = _metadata_warnings(reference, now)
    if preset.startswith("cross-device"):
        notes.append("cross-device tolerances: weight changes below cosine 0.9999 cannot be told from numerical "
                     "noise; make the reference on the device type that checks it for full sensitivity")
    outputs = pipeline_outputs(pipeline, [images[n] for n in reference.images], max_faces)
    use_det = reference.metadata["contract"]["use_det"]
    recognized = [None if "error" in out else
                  recognizer_values(pipeline, images[name], reference, reference.rows(index), use_det)
                  for index, (name, out) in enumerate(zip(reference.images, outputs))]
    report = CheckReport(reference_path, tolerances, preset, _judge(reference, outputs, recognized, tolerances),
                         warnings, notes)
    changes = dependency_changes(reference.metadata, now)
    if report.failures and changes and not warnings and preset.startswith("same-device"):
        loose = replace(DEPENDENCY_CHANGE, **{k: float(v) for k, v in (overrides or {}).items() if v is not None})
        judged = _judge(reference, outputs, recognized, loose)
        if not any(r.failures for r in judged):
            return replace(report, images=judged, tolerances=loose, preset="dependency-change",
                           dependency_changes=changes, moved=report.failures)
        notes.append(f"numeric dependencies changed ({', '.join(changes)}), but the outputs moved more than such "
                     f"upgrades were measured to move them (dependency-change limits: 1-cos <= "
                     f"{1 - loose.min_cos_recognizer:.3g})")
    return report


def _judge(reference: Reference, outputs: Sequence[Mapping[str, Any]],
           recognized: Sequence[list[FaceValue] | None], tolerances: Tolerances) -> list[ImageResult]:
    """Per-image results of comparing ``outputs`` (and the recognizer values) with ``reference`` at ``tolerances``."""
    use_det = reference.metadata["contract"]["use_det"]
    results = []
    for index, (name, out, recog) in enumerate(zip(reference.images, outputs, recognized)):
        rows = reference.rows(index)
        result = ImageResult(name, int(reference.face_counts[index]), len(out["scores"]))
        results.append(result)
        if "error" in out:
            result.failures.append({"image": name, "field": "image", "face": None, "value": out["error"],
                                    "limit": None, "message": f"{name}: could not be processed: {out['error']}"})
            continue
        if result.faces_now != result.faces_reference:
            result.failures.append({"image": name, "field": "faces", "face": None, "value": result.faces_now,
                                    "limit": result.faces_reference, "message": f"{name}: {result.faces_now} face(s), "
                                    f"the reference has {result.faces_reference}"})
        _compare_fields(result, tolerances, reference, rows, out, recog or [], use_det)
    return results


def _compare_fields(result: ImageResult, tol: Tolerances, ref: Reference, rows: slice, out: Mapping[str, np.ndarray],
                    recog: list[FaceValue], use_det: bool) -> None:
    """Fill ``result`` with the worst value per field and a failure entry per face and field out of tolerance or
    not finite (those carry ``value: None`` and say what is not finite)."""
    limits = {"embedding": 1 - tol.min_cos, "recognizer": 1 - tol.min_cos_recognizer,
              "landmarks": tol.max_landmark_px, "boxes": tol.max_box_px, "scores": tol.max_score_diff}
    units = {"embedding": "1-cos", "recognizer": "1-cos", "landmarks": "px", "boxes": "px", "scores": "abs"}
    values: dict[str, list[FaceValue]] = {k: [] for k in limits}
    values["recognizer"] = recog
    now = {key: np.asarray(out[key], np.float64) for _, key in FACE_FIELDS.values()}
    for i, j in _pair_faces(ref.landmarks[rows], now["keypoints"]):
        r = rows.start + i
        for field_name, (array, key) in FACE_FIELDS.items():
            values[field_name].append((i, *compare_values(field_name, getattr(ref, array)[r], now[key][j], use_det)))
    for key, entries in values.items():
        result.worst[key] = max((v for _, v, _ in entries if v is not None), default=0.0)
        for face, value, problem in entries:
            if value is None:
                if key not in result.non_finite:
                    result.non_finite.append(key)
                result.failures.append({"image": result.image, "field": key, "face": face, "value": None,
                                        "limit": limits[key], "message": f"{result.image} face {face} {key}: "
                                        f"{problem}"})
            elif not value <= limits[key]:
                result.failures.append({"image": result.image, "field": key, "face": face, "value": value,
                                        "limit": limits[key], "message": f"{result.image} face {face} {key}: "
                                        f"{units[key]} {value:.3g} > {limits[key]:.3g}"})
