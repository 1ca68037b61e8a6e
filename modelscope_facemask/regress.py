"""Reference-embedding regression: store what the pipeline produced for a few images, later check it still does.

A reference (``.npz``) holds, per image, the boxes, landmarks, scores and embeddings of the chosen faces, plus
metadata: versions, device, precision, sha256 of the weights files (recognizer and detector), the image names and
their sha256 (the images themselves are not stored), and the *embedding contract*: every pre-processing setting
that changes outputs (detector configuration incl. channel order, detection thresholds and resizing, detector mean,
face choice, minimum face size, alignment template, crop size, pixel normalisation), with its sha256.

The check compares five things per face (faces are paired by nearest landmarks; a different face count is a
regression): the end-to-end embedding (cosine), the recognizer alone (cosine between the reference embedding and the
embedding of the crop aligned on the *reference* landmarks, which removes detector jitter and so can be far
tighter), landmarks and boxes (max |difference| in pixels) and scores (max |difference|).

Default tolerances, measured on this project's 2-core CPU with the small deterministic test model and the real
mobilenet0.25 detector on the six portraits (``tests/regression/README.md`` has the numbers):

* same device type and precision as the reference (the CI case): fp32 CPU noise is 1-cos <= 7e-15 for the
  recognizer (batch vs single, 1-4 threads) and 1-cos 5.7e-8 end to end (the detector's landmarks move by 6e-5 px
  between 1 and 2 threads, which changes a few crop pixels); single-weight changes (one BatchNorm running_mean
  element +0.05, or one convolution scaled by 1.001, in any of 34 places) give recognizer 1-cos 2e-8 .. 1e-3, and
  detector changes move landmarks by 0.002 .. 1.1 px, or only boxes (0.04 px and more) or scores (2e-5 and more;
  score noise: 0). Hence 1-cos <= 1e-6 end to end, <= 1e-9 for the recognizer, 0.01 px, scores 1e-5: every
  one-weight change that alters any output on the reference images is caught (``tests/regression/sensitivity.py``).
* another device type or precision than the reference (e.g. a CPU reference checked on a GPU with TF32
  convolutions, or fp16): GPU fp16 vs fp32 embeddings of the full network differ by up to 1-cos 2e-7 (bf16: 1e-5),
  and the performance target is cosine >= 0.9999; hence cosine >= 0.9999 for both, 0.5 px, scores 1e-3. At these
  tolerances weight changes of the size above are *not* detectable: make the reference on the device that checks it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import FaceMaskError
from .faces.recognizer import EMBEDDING_SIZE

REFERENCE_FORMAT = "modelscope-facemask-regress/1"
_ARRAYS = ("images", "image_sha256", "face_counts", "boxes", "landmarks", "scores", "embeddings", "metadata")


class ReferenceError(FaceMaskError, ValueError):
    """The reference file, or the images it names, cannot be used (a usage error, exit code 2)."""


@dataclass(frozen=True)
class Tolerances:
    """Limits of a passing check (cosines are lower bounds, the rest upper bounds)."""

    min_cos: float
    min_cos_recognizer: float
    max_landmark_px: float
    max_box_px: float
    max_score_diff: float


#: reference and check on the same device type and precision (see the module docstring for the measurements)
SAME_DEVICE = Tolerances(min_cos=0.999999, min_cos_recognizer=0.999999999, max_landmark_px=0.01, max_box_px=0.01,
                         max_score_diff=1e-5)
#: reference made on another device type or precision than the check runs on
CROSS_DEVICE = Tolerances(min_cos=0.9999, min_cos_recognizer=0.9999, max_landmark_px=0.5, max_box_px=0.5,
                          max_score_diff=1e-3)


@dataclass
class Reference:
    """A loaded (or freshly made) reference; face rows of image ``i`` are ``rows(i)``."""

    images: list[str]
    image_sha256: list[str]
    face_counts: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    metadata: dict[str, Any]

    def rows(self, index: int) -> slice:
        start = int(self.face_counts[:index].sum())
        return slice(start, start + int(self.face_counts[index]))


# ---------------------------------------------------------------------- what a run depends on
def package_versions() -> dict[str, str]:
    """Versions of this package and of what shapes its numbers."""
    import cv2
    import modelscope
    import torch

    from .version import __version__

    versions = {"modelscope-facemask": __version__, "torch": torch.__version__, "modelscope": modelscope.__version__,
                "numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
                "platform": f"{platform.system()} {platform.machine()}"}
    try:
        from importlib.metadata import version

        versions["modelscope-hub"] = version("modelscope-hub")
    except Exception:  # noqa: BLE001 - older modelscope has no separate hub package
        pass
    return versions


def runtime_precision(device: Any, dtype: Any = None) -> str:
    """'fp32', 'fp16', 'bf16' (parameter dtype), with '+tf32' where CUDA convolutions may use TF32."""
    import torch

    dtype = dtype or torch.float32
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
    if torch.device(device).type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        name += "+tf32"
    return name


def pipeline_precision(pipeline: Any) -> str:
    """The precision the pipeline's recognizer runs in."""
    return runtime_precision(pipeline.device_used, next(pipeline.model.net.parameters()).dtype)


def embedding_contract(pipeline: Any, max_faces: int | None) -> dict[str, Any]:
    """Every pre-processing setting that changes outputs (with ``max_faces`` as the run uses it)."""
    from .faces.align import ARCFACE_TEMPLATE
    from .faces.detector import MEAN
    from .faces.prepare import CROP_SIZE
    from .faces.recognizer import PIXEL_TABLE

    settings = pipeline.preprocessor.settings
    contract: dict[str, Any] = {
        "use_det": settings.use_det, "max_faces": max_faces, "min_face_size": settings.min_face_size,
        "crop_size": CROP_SIZE, "alignment_template": np.asarray(ARCFACE_TEMPLATE).tolist(),
        "pixel_table_sha256": hashlib.sha256(np.ascontiguousarray(PIXEL_TABLE).tobytes()).hexdigest(),
        "embedding_normalisation": "l2",
    }
    if settings.use_det:
        detector = pipeline.preprocessor.detector
        contract.update(detector=detector.config.to_dict(), detection_settings=asdict(detector.settings),
                        detector_mean=list(MEAN))
    return contract


def contract_sha256(contract: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a contract."""
    return hashlib.sha256(json.dumps(contract, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def weights_metadata(pipeline: Any) -> dict[str, dict[str, Any]]:
    """File name, size and sha256 of the recognizer's weights and (when detection runs) the detector's."""
    from .manifest import file_sha256

    files = {"recognizer": Path(pipeline.model.weights_file)}
    pre = pipeline.preprocessor
    if pre.settings.use_det:
        files["detector"] = Path(pre.detector.weights_file)
    return {role: {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
            for role, path in files.items()}


def run_metadata(pipeline: Any, max_faces: int | None) -> dict[str, Any]:
    """Versions, device, precision, weights and contract of a run (what a reference records)."""
    import torch

    contract = embedding_contract(pipeline, max_faces)
    return {"versions": package_versions(), "device": str(pipeline.device_used),
            "precision": pipeline_precision(pipeline), "torch_threads": torch.get_num_threads(),
            "weights": weights_metadata(pipeline), "contract": contract, "contract_sha256": contract_sha256(contract)}


# ---------------------------------------------------------------------- create / save / load
def _outputs(pipeline: Any, paths: Sequence[Path], max_faces: int | None) -> list[dict[str, Any]]:
    return pipeline.run_batch([str(p) for p in paths], max_faces=max_faces)


def create_reference(pipeline: Any, images: Mapping[str, Path], *, max_faces: int | None,
                     model: str = "", images_dir: str = "", command: str = "") -> Reference:
    """Run ``pipeline`` on ``images`` ({name: path}) and record everything a later check compares."""
    from .manifest import file_sha256

    names = sorted(images)
    outputs = _outputs(pipeline, [images[n] for n in names], max_faces)
    failed = [f"{n}: {o['error']}" for n, o in zip(names, outputs) if "error" in o]
    if failed:
        raise ReferenceError("cannot make a reference from images that do not load: " + "; ".join(failed))
    metadata = {"format": REFERENCE_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": model, "images_dir": images_dir, "command": command, **run_metadata(pipeline, max_faces)}
    stacked = stack_outputs(outputs)
    return Reference(
        images=names, image_sha256=[file_sha256(images[n]) for n in names], face_counts=stacked["face_counts"],
        boxes=stacked["boxes"], landmarks=stacked["keypoints"], scores=stacked["scores"],
        embeddings=stacked["img_embedding"], metadata=metadata)


def stack_outputs(outputs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pipeline outputs of many images as flat arrays: ``face_counts`` (n,) and, face rows of all images in order,
    ``img_embedding`` (m, 512), ``scores`` (m,), ``boxes`` (m, 4), ``keypoints`` (m, 10)."""
    from .modelscope_adapters.pipeline import empty_output

    empty = empty_output()
    stacked = {key: np.concatenate([value] + [np.asarray(o[key], np.float32) for o in outputs])
               for key, value in empty.items()}
    return {"face_counts": np.array([len(o["scores"]) for o in outputs], np.int64), **stacked}


def save_reference(reference: Reference, path: str | Path) -> Path:
    """Write a reference ``.npz`` (compressed, no pickles)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f.name: getattr(reference, f.name) for f in fields(reference)}
    arrays["images"] = np.array(reference.images, dtype=str)
    arrays["image_sha256"] = np.array(reference.image_sha256, dtype=str)
    arrays["metadata"] = np.array(json.dumps(reference.metadata, sort_keys=True))
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_reference(path: str | Path) -> Reference:
    """Read and validate a reference ``.npz``; :class:`ReferenceError` when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference file {str(path)!r} does not exist; make one with `facemask regress create`")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _ARRAYS if k not in data.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            arrays = {k: data[k] for k in _ARRAYS}
        metadata = json.loads(str(arrays.pop("metadata")))
        if metadata.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {REFERENCE_FORMAT!r}")
        ref = Reference(images=[str(x) for x in arrays.pop("images")],
                        image_sha256=[str(x) for x in arrays.pop("image_sha256")], metadata=metadata, **arrays)
        total = int(ref.face_counts.sum())
        if (len(ref.images) != len(ref.face_counts) or ref.embeddings.shape != (total, EMBEDDING_SIZE)
                or ref.boxes.shape != (total, 4) or ref.landmarks.shape != (total, 10) or ref.scores.shape != (total,)):
            raise ValueError("array shapes do not agree with the face counts")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReferenceError(f"{str(path)!r} is not a readable `facemask regress` reference ({exc})") from None
    return ref


def locate_images(reference: Reference, folder: str | Path) -> dict[str, Path]:
    """The reference's images found by name in ``folder``, each with the sha256 the reference recorded."""
    from .manifest import file_sha256

    folder = Path(folder)
    if not folder.is_dir():
        raise ReferenceError(f"images folder {str(folder)!r} does not exist; pass --images DIR")
    found, problems = {}, []
    for name, digest in zip(reference.images, reference.image_sha256):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(path) != digest:
            problems.append(f"{name} differs from the image the reference was made from (sha256 {file_sha256(path)}, "
                            f"expected {digest})")
        else:
            found[name] = path
    if problems:
        raise ReferenceError(f"images in {str(folder)!r} do not match the reference: " + "; ".join(problems))
    return found


# ---------------------------------------------------------------------- check
@dataclass
class ImageResult:
    """Worst value per field for one image, and what failed."""

    image: str
    faces_reference: int
    faces_now: int
    worst: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckReport:
    """Outcome of a check: ``passed`` or not, per-image results, warnings, and the tolerances applied."""

    reference: str
    tolerances: Tolerances
    preset: str
    images: list[ImageResult]
    warnings: list[str]
    notes: list[str]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for r in self.images for f in r.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"status": "pass" if self.passed else "regression", "reference": self.reference,
                "tolerance_preset": self.preset, "tolerances": asdict(self.tolerances), "warnings": self.warnings,
                "notes": self.notes, "images": [asdict(r) for r in self.images], "failures": self.failures}


class _KnownFaces:
    """A stand-in detector that "finds" given faces, so ``prepare_faces`` aligns them exactly as the pipeline does."""

    def __init__(self, detections: Any) -> None:
        self.detections = detections

    def detect(self, images: Sequence[np.ndarray]) -> list[Any]:
        return [self.detections for _ in images]


def recognizer_embeddings(pipeline: Any, path: Path, landmarks: np.ndarray, boxes: np.ndarray,
                          scores: np.ndarray, use_det: bool) -> np.ndarray:
    """Embeddings of the faces at the given (reference) positions: the pipeline's alignment + recognizer only."""
    from .faces.detections import Detections
    from .faces.images import load_image
    from .faces.prepare import CROP_SIZE, prepare_faces

    image = load_image(path)
    if not use_det:
        crops = prepare_faces([image], None)[0].crops
    else:
        crops = np.concatenate([np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)] + [
            prepare_faces([image], _KnownFaces(Detections(boxes[i:i + 1], scores[i:i + 1], landmarks[i:i + 1])),
                          max_faces=1, min_face_size=0.0)[0].crops for i in range(len(scores))])
    return pipeline.model.embed(crops)


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity, in float64 (exactly 0 for identical rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.maximum(1.0 - cos, 0.0)


def _pair_faces(reference: np.ndarray, current: np.ndarray) -> list[tuple[int, int]]:
    """Greedy pairing of reference and current faces by mean landmark distance (NaN landmarks: by index)."""
    if np.isnan(reference).any() or np.isnan(current).any():
        return [(i, i) for i in range(len(reference))]
    cost = np.abs(reference[:, None, :] - current[None, :, :]).mean(-1)
    pairs, used_ref, used_cur = [], set(), set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, cost.shape)
        if i not in used_ref and j not in used_cur:
            pairs.append((int(i), int(j)))
            used_ref.add(i)
            used_cur.add(j)
    return sorted(pairs)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(np.nanmax(diff)) if diff.size and not np.isnan(diff).all() else 0.0


def choose_tolerances(reference: Reference, device: str, precision: str,
                      overrides: Mapping[str, float | None] | None = None) -> tuple[Tolerances, str]:
    """The preset for this reference/run pair (same or cross device), with explicit ``overrides`` applied."""
    same = (reference.metadata.get("device", "").split(":")[0] == device.split(":")[0]
            and reference.metadata.get("precision") == precision)
    preset, name = (SAME_DEVICE, "same-device") if same else (CROSS_DEVICE, "cross-device")
    given = {k: float(v) for k, v in (overrides or {}).items() if v is not None}
    return replace(preset, **given), name + (" with overrides" if given else "")


def _metadata_warnings(reference: Reference, now: dict[str, Any]) -> tuple[list[str], list[str]]:
    ref = reference.metadata
    warnings, notes = [], []
    if ref.get("contract_sha256") != now["contract_sha256"]:
        keys = sorted(k for k in set(ref.get("contract", {})) | set(now["contract"])
                      if ref.get("contract", {}).get(k) != now["contract"].get(k))
        warnings.append(f"embedding contract differs from the reference's (sha256 {str(ref.get('contract_sha256'))[:12]} "
                        f"vs {now['contract_sha256'][:12]}; changed: {', '.join(keys)}): outputs are expected to differ")
    for role, entry in now["weights"].items():
        old = ref.get("weights", {}).get(role, {})
        if old.get("sha256") != entry["sha256"]:
            warnings.append(f"{role} weights differ from the reference's ({entry['file']} sha256 {entry['sha256'][:12]} "
                            f"vs {str(old.get('sha256'))[:12]})")
    changed = [f"{k} {ref.get('versions', {}).get(k)} -> {v}" for k, v in now["versions"].items()
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
    outputs = _outputs(pipeline, [images[n] for n in reference.images], max_faces)
    use_det = reference.metadata["contract"]["use_det"]
    results = []
    for index, (name, out) in enumerate(zip(reference.images, outputs)):
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
        recog = recognizer_embeddings(pipeline, images[name], reference.landmarks[rows], reference.boxes[rows],
                                      reference.scores[rows], use_det)
        _compare_fields(result, tolerances, reference, rows, out, recog)
    return CheckReport(reference_path, tolerances, preset, results, warnings, notes)


def _compare_fields(result: ImageResult, tol: Tolerances, ref: Reference, rows: slice, out: Mapping[str, np.ndarray],
                    recog: np.ndarray) -> None:
    """Fill ``result`` with the worst value per field and a failure entry per face and field out of tolerance."""
    limits = {"embedding": 1 - tol.min_cos, "recognizer": 1 - tol.min_cos_recognizer,
              "landmarks": tol.max_landmark_px, "boxes": tol.max_box_px, "scores": tol.max_score_diff}
    units = {"embedding": "1-cos", "recognizer": "1-cos", "landmarks": "px", "boxes": "px", "scores": "abs"}
    values: dict[str, list[tuple[int, float]]] = {k: [] for k in limits}
    values["recognizer"] = [(i, float(v)) for i, v in enumerate(one_minus_cos(ref.embeddings[rows], recog))]
    for i, j in _pair_faces(ref.landmarks[rows], np.asarray(out["keypoints"])):
        r = rows.start + i
        values["embedding"].append((i, float(one_minus_cos(ref.embeddings[r], out["img_embedding"][j]))))
        values["landmarks"].append((i, _max_abs(ref.landmarks[r], out["keypoints"][j])))
        values["boxes"].append((i, _max_abs(ref.boxes[r], out["boxes"][j])))
        values["scores"].append((i, _max_abs(ref.scores[r], out["scores"][j])))
    for key, pairs in values.items():
        result.worst[key] = max((v for _, v in pairs), default=0.0)
        for face, value in pairs:
            if not value <= limits[key]:
                result.failures.append({"image": result.image, "field": key, "face": face, "value": value,
                                        "limit": limits[key], "message": f"{result.image} face {face} {key}: "
                                        f"{units[key]} {value:.3g} > {limits[key]:.3g}"})


# ---------------------------------------------------------------------- text report
_COLUMNS = (("embedding", "1-cos"), ("recognizer", "1-cos recog"), ("landmarks", "landmarks px"),
            ("boxes", "boxes px"), ("scores", "scores"))


def _num(value: float) -> str:
    return "0" if value == 0 else f"{value:.2g}"


def format_report(report: CheckReport, reference: Reference) -> str:
    """The human-readable report ``facemask regress check`` prints."""
    meta, tol = reference.metadata, report.tolerances
    versions = meta.get("versions", {})
    lines = [f"reference {report.reference}: {len(reference.images)} images, {int(reference.face_counts.sum())} faces; "
             f"made {meta.get('created', '?')} on {meta.get('device')} ({meta.get('precision')}) with "
             f"modelscope-facemask {versions.get('modelscope-facemask')}, torch {versions.get('torch')}",
             f"tolerances ({report.preset}): end-to-end 1-cos <= {1 - tol.min_cos:.3g}, recognizer 1-cos <= "
             f"{1 - tol.min_cos_recognizer:.3g}, landmarks <= {tol.max_landmark_px:g} px, boxes <= "
             f"{tol.max_box_px:g} px, scores <= {tol.max_score_diff:g}"]
    lines += [f"warning: {w}" for w in report.warnings] + [f"note: {n}" for n in report.notes]
    width = max([len("image")] + [len(r.image) for r in report.images])
    header = f"{'image':<{width}}  faces  " + "  ".join(f"{title:>12}" for _, title in _COLUMNS)
    lines += ["", header]
    for r in report.images:
        bad = {f["field"] for f in r.failures}
        cells = [f"{_num(r.worst.get(key, 0.0)) + ('!' if key in bad else ''):>12}" for key, _ in _COLUMNS]
        faces = f"{r.faces_now}/{r.faces_reference}" + ("!" if {"faces", "image"} & bad else "")
        lines.append(f"{r.image:<{width}}  {faces:<5}  " + "  ".join(cells))
    lines.append("")
    if report.passed:
        lines.append(f"PASS: {len(report.images)} images, {int(reference.face_counts.sum())} faces within tolerance")
    else:
        failed = sorted({f["image"] for f in report.failures})
        lines.append(f"REGRESSION: {len(failed)} of {len(report.images)} images out of tolerance:")
        lines += [f"  {f['message']}" for f in report.failures]
    return "\n".join(lines)


def command_line() -> str:
    """This process's command line, for the record."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
