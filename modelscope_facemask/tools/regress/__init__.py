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

Non-finite numbers never pass: NaN or Inf anywhere in the reference or in the current output is a failure of that
image and field. The one legitimate NaN: a reference made with ``use_det=False`` (its contract says so) records the
scores and landmarks of its whole-image rows as NaN (nothing was detected); there, scores and landmarks match when
both are entirely NaN. ``create`` refuses to record anything else that is not finite, and a reference file that is
not a well-formed reference (not an ``.npz``, missing or mistyped arrays or metadata) is a usage error naming the
file and the problem.

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
import re
import sys
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...support.atomic_files import writing_file
from ...errors import ConfigurationError, FaceMaskError
from ...faces.choose import validate_max_faces
from ...faces.recognizer import EMBEDDING_SIZE

REFERENCE_FORMAT = "modelscope-facemask-regress/1"
_ARRAYS = ("images", "image_sha256", "face_counts", "boxes", "landmarks", "scores", "embeddings", "metadata")
#: per-face arrays: name -> trailing shape (all float32)
_FACE_ARRAYS = {"boxes": (4,), "landmarks": (10,), "scores": (), "embeddings": (EMBEDDING_SIZE,)}
#: largest uncompressed content of a reference read (about 500,000 faces); a bigger archive is refused unread
MAX_REFERENCE_BYTES = 1 << 30
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
#: libraries whose releases change the numbers of the default CPU path: image decoding (Pillow), the alignment
#: warp (OpenCV), the networks (torch) and the arithmetic around them (numpy)
NUMERIC_DEPENDENCIES = ("opencv", "pillow", "torch", "numpy")
#: same device type and precision, same weights and contract, but another release of a numeric dependency: what such
#: upgrades were measured to move (tests/regression/README.md, "Dependency upgrades"): OpenCV 5.0.0 -> 5.1.0 (the
#: warp rounds 1-5 of 37,632 crop values by one level) recognizer 1-cos <= 5.2e-7; OpenCV 4.10-4.14 against 5.0.0
#: <= 6.1e-5; torch 2.14.1+cu130 -> 2.13.0+cpu and Pillow 11.3 / 12.0 -> 13.0 changed nothing; every one of these
#: leave landmarks, boxes and scores bit-identical on the portraits. Hence 1-cos <= 1e-4 (the decade above the worst
#: measured); the landmark, box and score limits stay the same-device ones, since no measured upgrade moved them.
DEPENDENCY_CHANGE = Tolerances(min_cos=0.9999, min_cos_recognizer=0.9999, max_landmark_px=0.01, max_box_px=0.01,
                               max_score_diff=1e-5)


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
    import PIL
    import torch

    from ...version import __version__

    versions = {"modelscope-facemask": __version__, "torch": torch.__version__, "modelscope": modelscope.__version__,
                "numpy": np.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__,
                "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
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
    from ...faces.align import ARCFACE_TEMPLATE
    from ...faces.detector import MEAN
    from ...faces.prepare import CROP_SIZE
    from ...faces.recognizer import PIXEL_TABLE

    settings = pipeline.preprocessor.settings
    contract: dict[str, Any] = {
        "use_det": settings.use_det, "max_faces": max_faces, "min_face_size": settings.min_face_size,
        "crop_size": CROP_SIZE, "alignment_template": np.asarray(ARCFACE_TEMPLATE).tolist(),
        "pixel_table_sha256": hashlib.sha256(np.ascontiguousarray(PIXEL_TABLE).tobytes()).hexdigest(),
        "embedding_normalisation": "l2",
    }
    if settings.use_det:
        detector = pipeline.preprocessor.detector
        detection = asdict(detector.settings)
        # opt-ins at their defaults leave outputs as before, so contracts made before those options stay equal;
        # batched post-processing gives equal results and is never part of the contract
        if detection["det_max_side"] is None:
            del detection["det_max_side"]
        if not detection["pad_batches"]:
            del detection["pad_batches"]
        del detection["batched_postprocess"]
        contract.update(detector=detector.config.to_dict(), detection_settings=detection, detector_mean=list(MEAN))
    return contract


def contract_sha256(contract: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a contract."""
    return hashlib.sha256(json.dumps(contract, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def weights_metadata(pipeline: Any) -> dict[str, dict[str, Any]]:
    """File name, size and sha256 of the recognizer's weights and (when detection runs) the detector's."""
    from ...model_files.manifest import file_sha256

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
    from ...model_files.manifest import file_sha256

    names = sorted(images)
    outputs = _outputs(pipeline, [images[n] for n in names], max_faces)
    failed = [f"{n}: {o['error']}" for n, o in zip(names, outputs) if "error" in o]
    if failed:
        raise ReferenceError("cannot make a reference from images that fail: " + "; ".join(failed))
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
    from ...modelscope_adapters.pipeline import empty_output

    empty = empty_output()
    stacked = {key: np.concatenate([value] + [np.asarray(o[key], np.float32) for o in outputs])
               for key, value in empty.items()}
    return {"face_counts": np.array([len(o["scores"]) for o in outputs], np.int64), **stacked}


def save_reference(reference: Reference, path: str | Path) -> Path:
    """Write a reference ``.npz`` (compressed, no pickles) atomically: a temporary sibling renamed into place.

    Refuses (:class:`ReferenceError`) a reference holding NaN or Inf other than the NaN scores and landmarks of a
    ``use_det=False`` reference: such a file could never be checked against.
    """
    bad = [f"{p.image} face {p.face} {p.field}: {p.what}" for p in non_finite_values(reference)]
    if bad:
        raise ReferenceError("refusing to record non-finite values (NaN or Inf): " + "; ".join(bad[:8]) +
                             (f"; ... ({len(bad)} in all)" if len(bad) > 8 else "") + "; the model's weights or "
                             "computation are broken, fix them before making a reference")
    path = Path(path)
    arrays = {f.name: getattr(reference, f.name) for f in fields(reference)}
    arrays["images"] = np.array(reference.images, dtype=str)
    arrays["image_sha256"] = np.array(reference.image_sha256, dtype=str)
    arrays["metadata"] = np.array(json.dumps(reference.metadata, sort_keys=True, allow_nan=False))
    with writing_file(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_reference(path: str | Path) -> Reference:
    """Read and validate a reference ``.npz`` (never unpickling); :class:`ReferenceError` naming the file and the
    problem when it is missing or not a well-formed reference (NaN/Inf values are not checked here: the check
    reports them per image and field)."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference file {str(path)!r} does not exist; make one with `facemask regress create`")
    try:
        arrays = _read_arrays(path)
        metadata = _parse_metadata(arrays.pop("metadata"))
        ref = Reference(images=_strings(arrays.pop("images"), "images"),
                        image_sha256=_strings(arrays.pop("image_sha256"), "image_sha256"), metadata=metadata, **arrays)
        _check_arrays(ref)
    except _Malformed as exc:
        problem = " ".join(str(exc).split())  # one line
        raise ReferenceError(f"{str(path)!r} is not a readable `facemask regress` reference: {problem}; make one "
                             "with `facemask regress create`") from None
    return ref


class _Malformed(Exception):
    """What is wrong with a reference file (becomes a one-line :class:`ReferenceError`)."""


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, without pickles, after checking it is one."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise _Malformed("the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise _Malformed("it is a single .npy array, not an .npz archive")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise _Malformed("it is a damaged or truncated .npz (zip) archive")
        raise _Malformed(f"it is not an .npz (zip) archive (it starts with {head!r})")
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > MAX_REFERENCE_BYTES:
            raise _Malformed(f"its content is {size} bytes uncompressed, more than the {MAX_REFERENCE_BYTES} a "
                             "reference may hold")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _ARRAYS if k not in data.files]
            if missing:
                raise _Malformed(f"arrays {missing} are missing (it has {sorted(data.files)})")
            return {k: data[k] for k in _ARRAYS}
    except _Malformed:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _Malformed("it holds pickled object arrays, which are never loaded") from None
        raise _Malformed(f"an array cannot be read ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt archives raise zipfile, zlib, EOF and OS errors alike
        raise _Malformed(f"it cannot be read as an .npz archive ({type(exc).__name__}: {exc})") from None


def _strings(array: np.ndarray, name: str) -> list[str]:
    if array.ndim != 1 or array.dtype.kind != "U":
        raise _Malformed(f"{name!r} must be a 1-D array of strings, got {array.dtype} {array.shape}")
    return [str(x) for x in array]


def _parse_metadata(array: np.ndarray) -> dict[str, Any]:
    """The metadata JSON, with the type of every entry the check reads verified."""
    if array.ndim != 0 or array.dtype.kind != "U":
        raise _Malformed(f"'metadata' must be a JSON string, got a {array.dtype} array of shape {array.shape}")
    try:
        meta = json.loads(str(array))
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"'metadata' is not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(meta, dict):
        raise _Malformed(f"'metadata' must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != REFERENCE_FORMAT:
        raise _Malformed(f"metadata format {meta.get('format')!r}, expected {REFERENCE_FORMAT!r}")
    expected = {"contract": dict, "contract_sha256": str, "device": str, "precision": str, "weights": dict,
                "versions": dict}
    optional = {"created": str, "images_dir": str, "model": str, "command": str, "torch_threads": int}
    for key, kind in {**expected, **optional}.items():
        if key not in meta:
            if key in expected:
                raise _Malformed(f"metadata has no {key!r}")
            continue
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise _Malformed(f"metadata {key!r} must be a {kind.__name__}, got {meta[key]!r:.60}")
    contract = meta["contract"]
    if not isinstance(contract.get("use_det"), bool):
        raise _Malformed(f"metadata contract 'use_det' must be true or false, got {contract.get('use_det')!r:.60}")
    if "max_faces" not in contract:
        raise _Malformed("metadata contract has no 'max_faces'")
    try:
        validate_max_faces(contract["max_faces"])
    except ConfigurationError as exc:
        raise _Malformed(f"metadata contract {exc}") from None
    if contract_sha256(contract) != meta["contract_sha256"]:
        raise _Malformed("metadata contract_sha256 does not match its contract (the file was edited)")
    for role, entry in meta["weights"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise _Malformed(f"metadata weights {role!r} must be an object with a 'sha256' string")
    return meta


def _check_arrays(ref: Reference) -> None:
    """Names, digests, counts, shapes and dtypes agree with each other."""
    if not ref.images:
        raise _Malformed("it names no images (a check of nothing would always pass)")
    if len(ref.image_sha256) != len(ref.images):
        raise _Malformed(f"{len(ref.images)} images but {len(ref.image_sha256)} sha256 digests")
    for name in ref.images:
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise _Malformed(f"image name {name!r} is not a relative path inside the images folder")
    if len(set(ref.images)) != len(ref.images):
        raise _Malformed("an image is named twice")
    bad = [d for d in ref.image_sha256 if not _SHA256.fullmatch(d)]
    if bad:
        raise _Malformed(f"image sha256 {bad[0]!r:.70} is not 64 lowercase hex digits")
    counts = ref.face_counts
    if counts.ndim != 1 or counts.dtype.kind not in "iu" or counts.shape != (len(ref.images),):
        raise _Malformed(f"'face_counts' must be {len(ref.images)} integers (one per image), got {counts.dtype} "
                         f"{counts.shape}")
    if (counts < 0).any():
        raise _Malformed("'face_counts' holds negative counts")
    total = int(counts.sum())
    for name, tail in _FACE_ARRAYS.items():
        array = getattr(ref, name)
        if array.dtype != np.float32 or array.shape != (total, *tail):
            raise _Malformed(f"{name!r} must be float32 of shape {(total, *tail)} ({total} faces), got {array.dtype} "
                             f"{array.shape}")


def locate_images(reference: Reference, folder: str | Path) -> dict[str, Path]:
    """The reference's images found by name in ``folder``, each with the sha256 the reference recorded."""
    from ...model_files.manifest import file_sha256

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


class _KnownFaces:
    """A stand-in detector that "finds" given faces, so ``prepare_faces`` aligns them exactly as the pipeline does."""

    def __init__(self, detections: Any) -> None:
        self.detections = detections

    def detect(self, images: Sequence[np.ndarray]) -> list[Any]:
        return [self.detections for _ in images]


@dataclass(frozen=True)
class NonFinite:
    """A NaN or Inf where a reference must hold finite numbers."""

    image: str
    face: int
    field: str
    what: str


#: check field -> (reference array, output key)
_FIELDS = {"embedding": ("embeddings", "img_embedding"), "landmarks": ("landmarks", "keypoints"),
           "boxes": ("boxes", "boxes"), "scores": ("scores", "scores")}


def nan_allowed(field_name: str, use_det: bool) -> bool:
    """Whether ``field_name`` legitimately holds NaN: scores and landmarks of ``use_det=False`` rows."""
    return not use_det and field_name in ("scores", "landmarks")


def describe_values(values: np.ndarray) -> str:
    """'finite', 'NaN', 'Inf' or 'NaN and Inf' (what non-finite values ``values`` holds)."""
    values = np.asarray(values, np.float64)
    kinds = [k for k, present in (("NaN", np.isnan(values).any()), ("Inf", np.isinf(values).any())) if present]
    return " and ".join(kinds) or "finite"


def non_finite_values(reference: Reference) -> list[NonFinite]:
    """Every face and field of ``reference`` holding NaN/Inf, except the all-NaN scores and landmarks a
    ``use_det=False`` reference records."""
    use_det = bool(reference.metadata.get("contract", {}).get("use_det", True))
    found = []
    for index, name in enumerate(reference.images):
        rows = reference.rows(index)
        for face, row in enumerate(range(rows.start, rows.stop)):
            for field_name, (array, _) in _FIELDS.items():
                values = getattr(reference, array)[row]
                if np.isfinite(values).all() or (nan_allowed(field_name, use_det) and np.isnan(values).all()):
                    continue
                found.append(NonFinite(name, face, field_name, describe_values(values)))
    return found


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


def recognizer_values(pipeline: Any, path: Path, reference: Reference, rows: slice,
                      use_det: bool) -> list[tuple[int, float | None, str]]:
    """Per reference face: 1-cos between the reference embedding and the pipeline's alignment + recognizer applied
    at the *reference* face position, or (None, problem) when that cannot be computed or is not finite."""
    from ...faces.detections import Detections
    from ...faces.images import load_image
    from ...faces.prepare import prepare_faces

    image = load_image(path)
    results: list[tuple[int, float | None, str]] = []
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


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity, in float64 (exactly 0 for identical rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.maximum(1.0 - cos, 0.0)


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
    outputs = _outputs(pipeline, [images[n] for n in reference.images], max_faces)
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


def dependency_changes(reference_metadata: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"opencv 5.0.0 -> 5.1.0"`` for every :data:`NUMERIC_DEPENDENCIES` entry whose version differs from the one the
    reference recorded (a library the reference did not record is not counted)."""
    recorded = reference_metadata.get("versions", {})
    return [f"{name} {recorded[name]} -> {now['versions'].get(name)}" for name in NUMERIC_DEPENDENCIES
            if name in recorded and recorded[name] != now["versions"].get(name)]


def _judge(reference: Reference, outputs: Sequence[Mapping[str, Any]],
           recognized: Sequence[list[tuple[int, float | None, str]] | None],
           tolerances: Tolerances) -> list[ImageResult]:
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
                    recog: list[tuple[int, float | None, str]], use_det: bool) -> None:
    """Fill ``result`` with the worst value per field and a failure entry per face and field out of tolerance or
    not finite (those carry ``value: None`` and say what is not finite)."""
    limits = {"embedding": 1 - tol.min_cos, "recognizer": 1 - tol.min_cos_recognizer,
              "landmarks": tol.max_landmark_px, "boxes": tol.max_box_px, "scores": tol.max_score_diff}
    units = {"embedding": "1-cos", "recognizer": "1-cos", "landmarks": "px", "boxes": "px", "scores": "abs"}
    values: dict[str, list[tuple[int, float | None, str]]] = {k: [] for k in limits}
    values["recognizer"] = recog
    now = {key: np.asarray(out[key], np.float64) for _, key in _FIELDS.values()}
    for i, j in _pair_faces(ref.landmarks[rows], now["keypoints"]):
        r = rows.start + i
        for field_name, (array, key) in _FIELDS.items():
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
    from ...support.printable import printable

    width = max([len("image")] + [len(printable(r.image)) for r in report.images])
    header = f"{'image':<{width}}  faces  " + "  ".join(f"{title:>12}" for _, title in _COLUMNS)
    lines += ["", header]
    for r in report.images:
        bad = {f["field"] for f in r.failures}
        texts = ["non-finite" if key in r.non_finite else _num(r.worst.get(key, 0.0)) for key, _ in _COLUMNS]
        cells = [f"{text + ('!' if key in bad else ''):>12}" for text, (key, _) in zip(texts, _COLUMNS)]
        faces = f"{r.faces_now}/{r.faces_reference}" + ("!" if {"faces", "image"} & bad else "")
        lines.append(f"{printable(r.image):<{width}}  {faces:<5}  " + "  ".join(cells))
    lines.append("")
    if report.status == "pass":
        lines.append(f"PASS: {len(report.images)} images, {int(reference.face_counts.sum())} faces within tolerance")
    elif report.status == "dependency-change":
        moved = sorted({f["image"] for f in report.moved})
        lines.append(f"DEPENDENCY CHANGE: {len(moved)} of {len(report.images)} images moved beyond the same-version "
                     f"limits, within what upgrades of {', '.join(report.dependency_changes)} were measured to move "
                     f"them (1-cos <= {1 - tol.min_cos_recognizer:.3g}); the weights and the contract are the "
                     "reference's:")
        lines += [f"  {printable(f['message'])}" for f in report.moved]
        lines.append("A weight change this small would look the same. Check with the reference's versions (pip "
                     "install -c constraints.txt), or after an intended upgrade refresh the lock and the reference "
                     "(README: 'Refreshing the lock and the reference').")
    else:
        failed = sorted({f["image"] for f in report.failures})
        lines.append(f"REGRESSION: {len(failed)} of {len(report.images)} images out of tolerance:")
        lines += [f"  {printable(f['message'])}" for f in report.failures]
    return "\n".join(lines)


def command_line() -> str:
    """This process's command line, for the record."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
