"""The reference file (``.npz``): its arrays and metadata, writing it, reading and validating it, and its images.

A reference holds, per image, the boxes, landmarks, scores and embeddings of the chosen faces, plus metadata (what
:func:`~modelscope_facemask.tools.regress.provenance.run_metadata` records, and the image names and their sha256;
the images themselves are not stored). Non-finite numbers are refused when recording, except the one legitimate
NaN: a reference made with ``use_det=False`` (its contract says so) records the scores and landmarks of its
whole-image rows as NaN (nothing was detected). A file that is not a well-formed reference (not an ``.npz``, missing
or mistyped arrays or metadata) is a usage error naming the file and the problem.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigurationError, FaceMaskError
from ...faces.choose import validate_max_faces
from ...faces.recognizer import EMBEDDING_SIZE
from ...support.atomic_files import writing_file
from .provenance import contract_sha256

REFERENCE_FORMAT = "modelscope-facemask-regress/1"
_ARRAYS = ("images", "image_sha256", "face_counts", "boxes", "landmarks", "scores", "embeddings", "metadata")
#: per-face arrays: name -> trailing shape (all float32)
_FACE_ARRAYS = {"boxes": (4,), "landmarks": (10,), "scores": (), "embeddings": (EMBEDDING_SIZE,)}
#: largest uncompressed content of a reference read (about 500,000 faces); a bigger archive is refused unread
MAX_REFERENCE_BYTES = 1 << 30
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: check field -> (reference array, output key)
FACE_FIELDS = {"embedding": ("embeddings", "img_embedding"), "landmarks": ("landmarks", "keypoints"),
               "boxes": ("boxes", "boxes"), "scores": ("scores", "scores")}


class ReferenceError(FaceMaskError, ValueError):
    """The reference file, or the images it names, cannot be used (a usage error, exit code 2)."""


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


# ---------------------------------------------------------------------- which values a reference may hold
@dataclass(frozen=True)
class NonFinite:
    """A NaN or Inf where a reference must hold finite numbers."""

    image: str
    face: int
    field: str
    what: str


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
            for field_name, (array, _) in FACE_FIELDS.items():
                values = getattr(reference, array)[row]
                if np.isfinite(values).all() or (nan_allowed(field_name, use_det) and np.isnan(values).all()):
                    continue
                found.append(NonFinite(name, face, field_name, describe_values(values)))
    return found


# ---------------------------------------------------------------------- save / load
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


# ---------------------------------------------------------------------- the images a reference names
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
