"""Building a ``facemask quantize`` folder: the fp32 torch pipeline gives the calibration inputs (aligned face crops
for the recognizer, the detector's own network inputs), NNCF quantizes the exported OpenVINO graphs on them, and the
int8 pipeline built from the new folder is measured against the fp32 one on the held-out images.

The folder is assembled in a temporary sibling and renamed into place (nothing half-written); an existing ``out``
is replaced only with ``force`` and only when it is an unchanged earlier quantize output.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigurationError
from .calibration import CalibrationSplit, calibration_hash
from .fidelity import fidelity_report

DETECTOR_CHOICES = ("fp32", "int8")
#: the detector's default in the quantize folder, chosen by measurement (docs/cpu-and-gpu.md, "int8")
DEFAULT_DETECTOR = "fp32"
REPORT_FILE = "fidelity.json"
#: at most this many face crops calibrate the recognizer (spread evenly over those found; NNCF's default subset)
MAX_RECOGNIZER_SAMPLES = 300


@dataclass(frozen=True)
class QuantizeRequest:
    """What to quantize: the model and detector folders, the split calibration set, the output folder."""

    model_dir: str
    detector_dir: str | None
    split: CalibrationSplit
    out: Path
    detector: str = DEFAULT_DETECTOR
    force: bool = False
    #: faces per image for calibration and the report (None: all; the benchmark's synthetic detector needs 1)
    max_faces: int | None = None


def fp32_pipeline(request: QuantizeRequest, **options: Any) -> Any:
    """The pipeline on the CPU, all faces, torch fp32 unless ``options`` say otherwise."""
    from ...modelscope_adapters.pipeline import FaceMaskPipeline

    return FaceMaskPipeline(request.model_dir, device="cpu", detector_model=request.detector_dir,
                            max_faces=request.max_faces, **options)


def calibration_inputs(pipe: Any, images: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(recognizer inputs: one (1, 3, 112, 112) array per aligned face, at most :data:`MAX_RECOGNIZER_SAMPLES`,
    detector inputs: one (1, 3, h, w) array of network planes per image) from the fp32 pipeline;
    :class:`ConfigurationError` when no face is found."""
    from ...faces.detector import network_planes
    from ...faces.images import load_image
    from ...faces.prepare import PreparedFaces
    from ...faces.recognizer import crops_to_tensor

    prepared = pipe.preprocessor.prepare([str(p) for p in images])
    crops = [p.crops for p in prepared if isinstance(p, PreparedFaces) and len(p)]
    if not crops:
        raise ConfigurationError(f"no face found in the {len(images)} calibration image(s): pass photos with faces, "
                                 "like the ones the model will see")
    faces = np.concatenate(crops)
    if len(faces) > MAX_RECOGNIZER_SAMPLES:
        faces = faces[np.linspace(0, len(faces) - 1, MAX_RECOGNIZER_SAMPLES).round().astype(int)]
    recognizer = [crops_to_tensor(c[None]).numpy() for c in faces]
    detector = []
    if pipe.preprocessor.settings.use_det:
        det = pipe.preprocessor.detector
        for path in images:
            planes, _ = network_planes(load_image(str(path)), det.settings, det.config.channel_order)
            detector.append(planes[None])
    return recognizer, detector


def write_graphs(staging: Path, networks: dict[str, Any], inputs: dict[str, list[np.ndarray]],
                 int8: dict[str, bool]) -> None:
    """Each network's IR into ``staging``: exported in fp32, then quantized where ``int8`` says so."""
    from ...engines.export import export_network
    from ...engines.quantize import quantize_openvino

    scratch = staging / ".fp32"
    for kind, net in networks.items():
        if not int8[kind]:
            export_network(net, kind, "openvino", staging)
            continue
        scratch.mkdir(exist_ok=True)
        xml = export_network(net, kind, "openvino", scratch)[0]
        quantize_openvino(xml, inputs[kind], staging / f"{kind}.xml")
    shutil.rmtree(scratch, ignore_errors=True)


def manifest_extra(request: QuantizeRequest, int8: dict[str, bool], inputs: dict[str, list[np.ndarray]]) -> dict:
    """What the manifest records beyond the file table: precision, the int8 networks, the calibration set, the
    tools' versions."""
    from ...engines.quantize import quantization_versions

    split = request.split
    return {"precision": "int8", "int8_networks": int8, "tool_versions": quantization_versions(),
            "calibration": {"sha256": calibration_hash(split.given), "hash": "sha256 of the sorted file sha256s",
                            "images_given": len(split.given), "calibration_images": len(split.calibration),
                            "held_out_images": len(split.held_out),
                            "samples": {kind: len(v) for kind, v in inputs.items() if int8.get(kind)}},
            "fidelity_report": REPORT_FILE}


def quantize_model(request: QuantizeRequest) -> dict[str, Any]:
    """Write the quantize folder ``request.out``; returns ``{"manifest": ..., "report": ...}``."""
    from ...engines.export_cache import check_replaceable_output, weights_sha256, write_graph_manifest
    from ...engines.int8_graphs import QUANTIZE_OUTPUT
    from ...support.atomic_files import writing_folder, write_text_atomic

    if request.detector not in DETECTOR_CHOICES:
        raise ConfigurationError(f"detector must be one of {DETECTOR_CHOICES}, got {request.detector!r}")
    exists = check_replaceable_output(request.out, QUANTIZE_OUTPUT, force=request.force)
    fp32 = fp32_pipeline(request)
    rec_inputs, det_inputs = calibration_inputs(fp32, request.split.calibration)
    model = fp32.model
    networks: dict[str, Any] = {"recognizer": model.net}
    sources = {"recognizer": weights_sha256(model.net, model.weights_file)}
    if det_inputs:
        det = fp32.preprocessor.detector
        networks["detector"], sources["detector"] = det.net, weights_sha256(det.net, det.weights_file)
    int8 = {"recognizer": True, **({"detector": request.detector == "int8"} if det_inputs else {})}
    inputs = {"recognizer": rec_inputs, "detector": det_inputs}
    with writing_folder(request.out, replace=exists) as staging:
        write_graphs(staging, networks, inputs, int8)
        extra = manifest_extra(request, int8, inputs)
        write_graph_manifest(staging, QUANTIZE_OUTPUT, "openvino", sources, extra)
        report = measure_fidelity(request, fp32, staging)
        write_text_atomic(staging / REPORT_FILE, json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
        manifest_path = write_graph_manifest(staging, QUANTIZE_OUTPUT, "openvino", sources, extra)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return {"manifest": manifest, "report": report}


def measure_fidelity(request: QuantizeRequest, fp32: Any, folder: Path) -> dict[str, Any]:
    """The fidelity report of the int8 graphs in ``folder`` against the fp32 pipeline, on the held-out images."""
    from ...faces.prepare import PreparedFaces

    int8 = fp32_pipeline(request, precision="int8", engine="openvino", engine_dir=str(folder))
    held_out = [str(p) for p in request.split.held_out]
    prepared = fp32.preprocessor.prepare(held_out)
    crops = [p.crops for p in prepared if isinstance(p, PreparedFaces) and len(p)]
    crops_all = np.concatenate(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)
    report = fidelity_report([os.path.basename(p) for p in held_out], fp32.model.embed(crops_all),
                             int8.model.embed(crops_all), fp32(held_out), int8(held_out))
    report["int8_networks"] = int8.int8_networks
    report["calibration_images"] = [p.name for p in request.split.calibration]
    return report
