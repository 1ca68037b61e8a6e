"""Reading a FaceMask model folder's configuration.json into typed settings.

Two shapes are accepted: the official hub card (often only ``framework``, ``task`` and ``pipeline.type``) and this
project's card, which may add ``model`` (``type: facemask``, optional ``backbone.units``) and ``preprocessor``
(``detector``: a hub id or a folder inside the model repo; ``max_faces``; ``use_det``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .faces.choose import validate_max_faces
from .model_dirs import local_model_dir
from .nets.iresnet import DEPTH_UNITS

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


def read_configuration(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed configuration.json of a model folder (a clear error when missing or malformed)."""
    path = Path(model_dir) / CONFIGURATION_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"{str(path)!r} not found: a FaceMask model folder needs a configuration.json "
            "(download the whole model repository, e.g. with modelscope's snapshot_download)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{str(path)!r} is not valid JSON: {exc}") from None


def facemask_settings(config: dict[str, Any]) -> FaceMaskSettings:
    """Typed settings from a configuration dict; absent keys take the reference defaults."""
    model = config.get("model") or {}
    pre = config.get("preprocessor") or {}
    units = tuple((model.get("backbone") or {}).get("units", FACEMASK_UNITS))
    if len(units) != 4 or not all(isinstance(u, int) and u > 0 for u in units):
        raise ConfigurationError(f"model.backbone.units must be four positive integers, got {units!r}")
    max_faces = pre.get("max_faces", 1)
    validate_max_faces(max_faces)
    use_det = pre.get("use_det", True)
    if not isinstance(use_det, bool):
        raise ConfigurationError(f"preprocessor.use_det must be true or false, got {use_det!r}")
    min_face_size = pre.get("min_face_size", 10.0)
    if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, float)) or min_face_size < 0:
        raise ConfigurationError(f"preprocessor.min_face_size must be a number >= 0 (pixels), got {min_face_size!r}")
    return FaceMaskSettings(
        detector=str(pre.get("detector", DEFAULT_DETECTOR)),
        units=units,  # type: ignore[arg-type]
        max_faces=max_faces,
        use_det=use_det,
        min_face_size=float(min_face_size),
    )


def resolve_detector_dir(detector: str | os.PathLike, model_dir: str | os.PathLike | None = None) -> Path:
    """A local detector folder for ``detector``: a folder inside ``model_dir``, a local folder, or a hub id
    (taken from ModelScope's cache when present, else downloaded with ``snapshot_download``)."""
    candidates = []
    if model_dir is not None:
        candidates.append(Path(model_dir) / detector)
    candidates.append(Path(detector))
    for folder in candidates:
        if (folder / CONFIGURATION_FILE).is_file():
            return folder
    text = os.fspath(detector)
    if text.count("/") != 1 or text.startswith((".", "/")) or os.path.isabs(text):
        raise ConfigurationError(
            f"detector {text!r} is neither a RetinaFace model folder (with configuration.json) nor a hub id 'owner/name'"
        )
    return Path(local_model_dir(text, prefer_cache=True))
