"""What a run depends on: package versions, device and precision, weights files and the embedding contract.

The *embedding contract* is every pre-processing setting that changes outputs (detector configuration incl. channel
order, detection thresholds and resizing, detector mean, face choice, minimum face size, alignment template, crop
size, pixel normalisation), with its sha256. A reference records all of this; run metadata of embedded rows and
galleries too.
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np


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
