"""Model repository folders in the hub layout: configuration.json contents and weights files (pack, demo, tests)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ...model_files.checkpoints import TORCH_WEIGHTS, save_state_dict
from ...modelscope_adapters.configuration import CONFIGURATION_FILE, DEFAULT_DETECTOR, FACEMASK_UNITS
from ...metainfo import Models, Pipelines, Preprocessors
from ...nets.retinaface import RetinaFaceConfig

#: what the official hub card of damo/cv_resnet_face-recognition_facemask may hold at minimum
OFFICIAL_MINIMAL_CONFIGURATION: dict[str, Any] = {
    "framework": "pytorch",
    "task": "face-recognition",
    "pipeline": {"type": Pipelines.builtin_facemask},
}


def facemask_configuration(
    *, detector: str = DEFAULT_DETECTOR, units: Sequence[int] = FACEMASK_UNITS, max_faces: int | None = 1
) -> dict[str, Any]:
    """This project's configuration.json for a FaceMask repository."""
    model: dict[str, Any] = {"type": Models.facemask}
    if tuple(units) != FACEMASK_UNITS:
        model["backbone"] = {"units": list(units)}
    return {
        "framework": "pytorch",
        "task": "face-recognition",
        "pipeline": {"type": Pipelines.builtin_facemask},
        "model": model,
        "preprocessor": {"type": Preprocessors.facemask_preprocessor, "detector": detector, "max_faces": max_faces},
    }


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write pretty strict JSON (UTF-8, trailing newline, non-finite floats as null) atomically."""
    from ...support.json_output import write_json as write_strict_json

    return write_strict_json(path, data)


def write_facemask_repo(
    folder: str | os.PathLike, state: Mapping[str, torch.Tensor], configuration: Mapping[str, Any]
) -> Path:
    """A FaceMask repository: ``configuration.json`` + ``pytorch_model.pt`` (plain state dict)."""
    folder = Path(folder)
    save_state_dict(state, folder / TORCH_WEIGHTS)
    write_json(folder / CONFIGURATION_FILE, configuration)
    return folder


def write_detector_repo(folder: str | os.PathLike, state: Mapping[str, torch.Tensor], config: RetinaFaceConfig) -> Path:
    """A RetinaFace repository like ``damo/cv_resnet50_face-detection_retinaface``: configuration.json + weights."""
    folder = Path(folder)
    save_state_dict(state, folder / TORCH_WEIGHTS)
    write_json(
        folder / CONFIGURATION_FILE,
        {"framework": "pytorch", "task": "face-detection",
         "pipeline": {"type": "resnet50-face-detection-retinaface"}, "models": config.to_dict()},
    )
    return folder
