"""``facemask pack``: build a publishable, self-verifying ModelScope repository from a FaceMask model.

Output: ``configuration.json`` (this project's card), ``pytorch_model.pt`` and ``model.safetensors`` (same tensors,
strictly loaded and re-saved), the detector inside the repository when one is given (or when the source keeps it
inside), ``README.md`` (model card) and ``manifest.json`` (sha256 + size of every file, ``generator``
modelscope-facemask). The folder is assembled in a temporary sibling of the destination, loaded back and checked
there, and only then renamed into place. An existing destination is replaced only with ``force=True`` and only when
it is an unchanged earlier output (its generated manifest lists exactly its files); anything else is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...model_files.checkpoints import SAFETENSORS_WEIGHTS, TORCH_WEIGHTS, read_state_dict, save_state_dict
from ...modelscope_adapters.configuration import (CONFIGURATION_FILE, FaceMaskSettings, facemask_settings,
                                                   read_configuration, resolve_detector_dir)
from ...support.atomic_files import writing_folder
from ...errors import CheckpointError, ConfigurationError, OutputFolderError
from ...model_files.manifest import read_manifest, replacement_problem, verify_manifest, write_manifest
from .model_card import DEFAULT_LICENSE, PLACEHOLDER_MODEL_ID, CardFacts, render_model_card, says_untrained
from ...model_files.model_folders import local_model_dir
from .repository_writers import facemask_configuration, write_detector_repo, write_json

README_FILE = "README.md"


@dataclass(frozen=True)
class PackResult:
    """The packed folder, its files (posix path -> bytes) and where its detector comes from."""

    folder: Path
    files: dict[str, int]
    detector: str
    detector_inside: bool


def detector_folder_name(name: str) -> str:
    """The folder a RetinaFace backbone's detector gets inside a packed repository, e.g. ``retinaface_mobilenet0.25``."""
    return f"retinaface_{name.lower()}"


def _configuration(settings: FaceMaskSettings, detector: str) -> dict[str, Any]:
    config = facemask_configuration(detector=detector, units=settings.units, max_faces=settings.max_faces)
    defaults = FaceMaskSettings()
    if settings.use_det != defaults.use_det:
        config["preprocessor"]["use_det"] = settings.use_det
    if settings.min_face_size != defaults.min_face_size:
        config["preprocessor"]["min_face_size"] = settings.min_face_size
    return config


def _read_evaluation(path: str | os.PathLike) -> tuple[dict[str, Any], str | None]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        evaluation = data["evaluation"]
        missing = [k for k in ("genuine_pairs", "impostor_pairs", "roc_auc", "eer", "eer_threshold",
                               "operating_points") if k not in evaluation]
        if missing:
            raise KeyError(f"evaluation lacks {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{str(path)!r} is not a `facemask evaluate --json` result ({exc})") from None
    return evaluation, data.get("pairs_file")


def _prepare_destination(out: Path, source: Path, force: bool) -> None:
    """Refuse (:class:`OutputFolderError`) unless ``out`` is new, an empty folder, or (``force``) an unchanged
    earlier output of this package (see :func:`~modelscope_facemask.model_files.manifest.replacement_problem`)."""
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ConfigurationError(f"--out {str(out)!r} must not be the model folder or inside it")
    if not (out.exists() or out.is_symlink()) or (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        return
    problem = replacement_problem(out)
    if problem is None and not force:
        raise OutputFolderError(f"{str(out)!r} exists (an earlier `facemask pack` output); choose a new folder, or "
                                "pass --force to replace it")
    if problem is not None:
        raise OutputFolderError(
            f"refusing to {'replace' if force else 'write into'} {str(out)!r}: {problem}, so it is not provably an "
            "unchanged `facemask pack` output and may hold your data; choose a new --out folder, or move or delete "
            "it yourself")


def _check_packed(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Both weights files hold exactly ``state``, and the packed folder loads like any model folder."""
    from ...modelscope_adapters.model import FaceMaskModel

    for name in (TORCH_WEIGHTS, SAFETENSORS_WEIGHTS):
        saved = read_state_dict(folder / name)
        if saved.keys() != state.keys() or any(not torch.equal(saved[k], state[k]) for k in state):
            raise CheckpointError(f"packed {name} does not reproduce the source weights")
    FaceMaskModel(str(folder), device="cpu")  # strict load + manifest verification


def pack_model(model: str, out: str | os.PathLike, *, detector: str | None = None, model_id: str | None = None,
               license: str = DEFAULT_LICENSE, untrained: bool = False, evaluation: str | os.PathLike | None = None,
               force: bool = False) -> PackResult:
    """Pack ``model`` (local folder or hub id) into ``out``; see the module docstring."""
    from ...faces.detector import FaceDetector
    from ...modelscope_adapters.model import FaceMaskModel

    source = Path(local_model_dir(model))
    out = Path(out)
    _prepare_destination(out, source, force)
    eval_data, eval_source = _read_evaluation(evaluation) if evaluation is not None else (None, None)
    settings = facemask_settings(read_configuration(source))
    untrained = untrained or says_untrained(source)
    recognizer = FaceMaskModel(str(source), device="cpu")  # strict load; verifies the source's manifest if any
    state = {k: v.detach().cpu() for k, v in recognizer.net.state_dict().items()}
    inside = detector is not None or (source / settings.detector / CONFIGURATION_FILE).is_file()

    with writing_folder(out, replace=force) as staging:  # assembled next to ``out``, renamed in when complete
        det_name = det_params = None
        detector_ref = settings.detector
        if inside:
            det = FaceDetector.from_pretrained(resolve_detector_dir(detector or settings.detector, source),
                                               repository=source)
            detector_ref, det_name = detector_folder_name(det.config.name), det.config.name
            det_params = sum(p.numel() for p in det.net.parameters())
            write_detector_repo(staging / detector_ref, det.net.state_dict(), det.config)
        save_state_dict(state, staging / TORCH_WEIGHTS)
        save_state_dict(state, staging / SAFETENSORS_WEIGHTS)
        write_json(staging / CONFIGURATION_FILE, _configuration(settings, detector_ref))
        sizes = {p.relative_to(staging).as_posix(): p.stat().st_size for p in staging.rglob("*") if p.is_file()}
        facts = CardFacts(
            model_id=model_id or PLACEHOLDER_MODEL_ID, units=settings.units,
            parameters=sum(p.numel() for p in recognizer.net.parameters()), detector=detector_ref,
            detector_inside=inside, detector_name=det_name, detector_parameters=det_params,
            max_faces=settings.max_faces, file_sizes=sizes, license=license, untrained=untrained,
            evaluation=eval_data, evaluation_source=eval_source)
        (staging / README_FILE).write_text(render_model_card(facts), encoding="utf-8")
        write_manifest(staging)
        _check_packed(staging, state)  # before ``out`` is touched: a failure leaves it as it was
        verify_manifest(staging)
        _prepare_destination(out, source, force)  # again: it may have changed while we packed
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()  # an empty folder (only removed when empty: rmdir refuses otherwise)
    files = {rel: entry["size"] for rel, entry in (read_manifest(out) or {}).items()}
    return PackResult(out, files, detector_ref, inside)
