"""Reading a FaceMask model folder's configuration.json into typed settings.

Two shapes are accepted: the official hub card (often only ``framework``, ``task`` and ``pipeline.type``) and this
project's card, which may add ``model`` (``type: facemask``, optional ``backbone.units``, optional ``precision``:
``fp32`` (default), ``fp16`` or ``bf16``, for the recognizer and the detector alike; optional ``engine``: ``torch``
(default), ``onnxruntime`` or ``openvino``, for both networks too) and ``preprocessor``
(``detector``: a hub id or a folder inside the model repo; ``max_faces``; ``use_det``; ``det_max_side``; opt-in
``pad_batches`` (true/false) and ``batched_postprocess`` (true/false/null = on CUDA only)).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..faces.choose import validate_max_faces
from ..faces.detector import check_batched_postprocess, check_det_max_side
from ..model_files.model_folders import is_hub_id, local_model_dir
from ..nets.iresnet import DEPTH_UNITS
from ..engines import DEFAULT_ENGINE, ENGINES
from ..engines.precision import DEFAULT_PRECISION, PRECISIONS

CONFIGURATION_FILE = "configuration.json"
#: the detector the FaceMask model card describes (RetinaFace-R50, used by ModelScope up to v1.4)
DEFAULT_DETECTOR = "damo/cv_resnet50_face-detection_retinaface"
FACEMASK_UNITS = DEPTH_UNITS[252]


@dataclass(frozen=True)
class FaceMaskSettings:
    """What a model folder's configuration says about building the pipeline."""

    detector: str = DEFAULT_DETECTOR
    units: tuple[int, int, int, int] = FACEMASK_UNITS
    max_faces: int | None = 1
    use_det: bool = True
    min_face_size: float = 10.0
    precision: str = DEFAULT_PRECISION
    det_max_side: int | None = None
    engine: str = DEFAULT_ENGINE
    pad_batches: bool = False
    batched_postprocess: bool | None = None


def read_configuration(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed configuration.json of a model folder, checked: a JSON object whose FaceMask settings (see
    :func:`facemask_settings`) are valid. Every problem is a :class:`ConfigurationError` naming the file."""
    path = Path(model_dir) / CONFIGURATION_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{str(path)!r} not found: a FaceMask model folder needs a configuration.json "
            "(download the whole model repository, e.g. with modelscope's snapshot_download)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"{str(path)!r} cannot be read ({exc.strerror or exc}); {_FIX}") from None
    config = parse_configuration(raw, str(path))
    try:
        facemask_settings(config)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{str(path)!r}: {exc}; {_FIX}") from None
    return config


_FIX = "fix or replace the file (re-download the model repository)"


def parse_configuration(raw: bytes, source: str,
                        sections: tuple[str, ...] = ("model", "preprocessor", "pipeline")) -> dict[str, Any]:
    """``raw`` (the bytes of a configuration.json) as a dict; a :class:`ConfigurationError` naming ``source`` when
    it is not UTF-8 JSON holding an object, or when one of ``sections`` (default: those ModelScope or this package
    reads) is present but not an object."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{source!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); {_FIX}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source!r} is not valid JSON: {exc}; {_FIX}") from None
    except RecursionError:
        raise ConfigurationError(f"{source!r} is nested too deeply to be a configuration; {_FIX}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"{source!r} must hold a JSON object ({{...}}), found {_json_kind(config)}; {_FIX}")
    for key in sections:
        if key in config and not isinstance(config[key], dict):
            raise ConfigurationError(
                f"{source!r}: \"{key}\" must be a JSON object ({{...}}), found {_json_kind(config[key])}; {_FIX}")
    return config


def _json_kind(value: object) -> str:
    """How JSON would name ``value``'s type, with a short excerpt."""
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
    return kind if value is None else f"{kind} {_excerpt(value)}"


def _excerpt(value: object, limit: int = 40) -> str:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):  # NaN/Infinity, or not a JSON type (settings built in code)
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section(config: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}{key} must be a JSON object ({{...}}), found {_json_kind(value)}")
    return value


def facemask_settings(config: dict[str, Any]) -> FaceMaskSettings:
    """Typed settings from a configuration dict; absent keys take the reference defaults. Any value of the wrong
    type or range raises :class:`ConfigurationError` naming the key."""
    if not isinstance(config, dict):
        raise ConfigurationError(f"a configuration must be a JSON object ({{...}}), found {_json_kind(config)}")
    model = _section(config, "model", "")
    pre = _section(config, "preprocessor", "")
    units = _units(_section(model, "backbone", "model."))
    max_faces = _max_faces(pre)
    use_det = _true_or_false(pre, "use_det", True, "")
    min_face_size = _min_face_size(pre)
    detector = _detector(pre)
    precision = _one_of(model, "precision", DEFAULT_PRECISION, PRECISIONS, " (lower case)")
    engine = _one_of(model, "engine", DEFAULT_ENGINE, ENGINES, "")
    try:
        det_max_side = check_det_max_side(pre.get("det_max_side"), where="preprocessor.det_max_side")
    except ConfigurationError:
        raise ConfigurationError("preprocessor.det_max_side must be an integer >= 32 (px) or null (the reference's "
                                 f"1500/1000 rule), got {_excerpt(pre.get('det_max_side'))}") from None
    pad_batches = _true_or_false(pre, "pad_batches", False,
                                 " (opt-in: images of different sizes detected together, padded)")
    try:
        batched_postprocess = check_batched_postprocess(pre.get("batched_postprocess"),
                                                        where="preprocessor.batched_postprocess")
    except ConfigurationError:
        raise ConfigurationError("preprocessor.batched_postprocess must be true, false or null (auto: on CUDA only), "
                                 f"got {_excerpt(pre.get('batched_postprocess'))}") from None
    return FaceMaskSettings(detector=detector, units=units, max_faces=max_faces, use_det=use_det,
                            min_face_size=min_face_size, precision=precision, det_max_side=det_max_side, engine=engine,
                            pad_batches=pad_batches, batched_postprocess=batched_postprocess)


def _units(backbone: dict[str, Any]) -> tuple[int, int, int, int]:
    units = backbone.get("units", FACEMASK_UNITS)
    if not (isinstance(units, (list, tuple)) and len(units) == 4
            and all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units)):
        raise ConfigurationError(f"model.backbone.units must be four positive integers, got {_excerpt(units)}")
    return tuple(units)  # type: ignore[return-value]


def _max_faces(pre: dict[str, Any]) -> int | None:
    max_faces = pre.get("max_faces", 1)
    try:
        validate_max_faces(max_faces)
    except ConfigurationError:
        raise ConfigurationError(f"preprocessor.max_faces must be a positive integer or null (all faces), "
                                 f"got {_excerpt(max_faces)}") from None
    return max_faces


def _true_or_false(pre: dict[str, Any], key: str, default: bool, meaning: str) -> bool:
    value = pre.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"preprocessor.{key} must be true or false{meaning}, got {_excerpt(value)}")
    return value


def _min_face_size(pre: dict[str, Any]) -> float:
    min_face_size = pre.get("min_face_size", 10.0)
    if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, float)) \
            or not math.isfinite(min_face_size) or min_face_size < 0:
        raise ConfigurationError(
            f"preprocessor.min_face_size must be a finite number >= 0 (pixels), got {_excerpt(min_face_size)}")
    return float(min_face_size)


def _detector(pre: dict[str, Any]) -> str:
    detector = pre.get("detector", DEFAULT_DETECTOR)
    if not isinstance(detector, str) or not detector.strip():
        raise ConfigurationError("preprocessor.detector must be a RetinaFace hub id ('owner/name') or a folder "
                                 f"inside the model repository, got {_excerpt(detector)}")
    check_repository_detector(detector)
    return detector


def _one_of(model: dict[str, Any], key: str, default: str, allowed: tuple[str, ...] | list[str], note: str) -> str:
    value = model.get(key, default)
    if not isinstance(value, str) or value not in allowed:
        raise ConfigurationError(f"model.{key} must be " + ", ".join(f'"{a}"' for a in allowed)
                                 + f"{note}, got {_excerpt(value)}")
    return value


def check_repository_detector(detector: str) -> None:
    """A ``preprocessor.detector`` of a configuration.json must be a hub id or a relative folder that stays inside
    the repository: no absolute path, drive, ``~`` or ``..`` (symlinks are checked when the folder is resolved)."""
    parts = re.split(r"[\\/]+", detector)
    if os.path.isabs(detector) or detector.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", detector) \
            or ".." in parts:
        raise ConfigurationError(
            f"preprocessor.detector {detector!r} points outside the model repository: a configuration.json may "
            "name only a folder inside its repository (e.g. 'detector') or a hub id 'owner/name'; pass a local "
            "detector folder elsewhere explicitly (detector_model=... / --detector)")


def resolve_detector_dir(detector: str | os.PathLike, model_dir: str | os.PathLike | None = None, *,
                         from_configuration: bool | None = None) -> Path:
    """A local detector folder for ``detector``: a folder inside ``model_dir``, a local folder, or a hub id
    (taken from ModelScope's cache when present, else downloaded with ``snapshot_download``).

    A detector named by the model folder's configuration.json (``from_configuration``; by default: when it equals
    the configuration's ``preprocessor.detector``) may only be a folder inside ``model_dir`` (checked after
    resolving symlinks) or a hub id. A detector given by the caller may also be any local folder.
    """
    text = os.fspath(detector)
    if from_configuration is None:
        from_configuration = model_dir is not None and text == _configured_detector(model_dir)
    if from_configuration:
        check_repository_detector(text)
    if model_dir is not None and not os.path.isabs(text):
        root = Path(model_dir).resolve()
        inside = (Path(model_dir) / text).resolve()
        if (inside / CONFIGURATION_FILE).is_file():
            if inside.is_relative_to(root):
                return Path(model_dir) / text
            if from_configuration:
                raise ConfigurationError(
                    f"preprocessor.detector {text!r} of {str(Path(model_dir) / CONFIGURATION_FILE)!r} resolves to "
                    f"{str(inside)!r}, outside the model repository (a symbolic link?): a configuration.json may "
                    "name only a folder inside its repository or a hub id 'owner/name'")
    if not from_configuration:
        folder = Path(os.path.expanduser(text))
        if (folder / CONFIGURATION_FILE).is_file():
            return folder
        if folder.is_dir():
            raise ConfigurationError(f"detector folder {text!r} has no {CONFIGURATION_FILE}: pass a RetinaFace model "
                                     "folder (configuration.json + weights) or a hub id 'owner/name'")
    if not is_hub_id(text):
        where = (f"a folder inside {str(model_dir)!r} (with configuration.json)" if from_configuration
                 else "an existing RetinaFace model folder (with configuration.json)")
        raise ConfigurationError(f"detector {text!r} is neither {where} nor a hub id 'owner/name'")
    return Path(local_model_dir(text, prefer_cache=True, what="detector"))


def _configured_detector(model_dir: str | os.PathLike) -> str | None:
    """The ``preprocessor.detector`` string of ``model_dir``'s configuration.json, if it has one."""
    try:
        value = (read_configuration(model_dir).get("preprocessor") or {}).get("detector")
    except ConfigurationError:
        return None
    return value if isinstance(value, str) else None


def is_untrained_demo_model(folder: str | os.PathLike) -> bool:
    """True for a model folder written by :func:`modelscope_facemask.tools.demo.build_demo_model` (its
    configuration.json says ``demo.untrained``)."""
    try:
        config = json.loads((Path(folder) / "configuration.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and (config.get("demo") or {}).get("untrained"))
