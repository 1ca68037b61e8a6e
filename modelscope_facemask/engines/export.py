"""Export the recognizer and the detector to ONNX (dynamic batch; the detector also dynamic height and width) and
to OpenVINO IR (converted from that ONNX graph, weights kept in fp32).

Graph files: ``recognizer.onnx`` / ``detector.onnx``, or ``recognizer.xml`` + ``.bin`` / ``detector.xml`` + ``.bin``.
Inputs are named ``input`` (float32 NCHW: the recognizer's ``(x / 255 - 0.5) / 0.5`` crops, the detector's
mean-subtracted planes in its channel order); outputs ``embedding`` (unnormalised), and ``loc``, ``conf``
(softmax), ``landmarks``. The graphs are traced in fp32 on the CPU with PyTorch's TorchScript-based ONNX exporter
(``dynamo=False``: the dynamo exporter needs ``onnxscript``, which is not a dependency).
"""
from __future__ import annotations

import copy
import os
import threading
import warnings
from pathlib import Path

import torch

from . import KINDS

#: ONNX opset of the exported graphs
OPSET = 17
FORMATS = ("onnx", "openvino")
INPUT_NAME = "input"
OUTPUT_NAMES = {"recognizer": ("embedding",), "detector": ("loc", "conf", "landmarks")}
#: the example input each network is traced with (the exported graph accepts any batch; the detector any H and W)
EXAMPLE_SHAPES = {"recognizer": (1, 3, 112, 112), "detector": (1, 3, 320, 320)}
#: torch.onnx.export keeps global state: one export at a time per process (threads building pipelines together)
_EXPORT_LOCK = threading.Lock()


def graph_files(kind: str, fmt: str) -> tuple[str, ...]:
    """The file names of one exported network: ``('recognizer.onnx',)`` or ``('detector.xml', 'detector.bin')``."""
    return (f"{kind}.onnx",) if fmt == "onnx" else (f"{kind}.xml", f"{kind}.bin")


def dynamic_axes(kind: str) -> dict[str, dict[int, str]]:
    """Which axes of the inputs and outputs are dynamic."""
    if kind == "recognizer":
        return {INPUT_NAME: {0: "batch"}, "embedding": {0: "batch"}}
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 1: "anchors"} for name in OUTPUT_NAMES["detector"]})
    return axes


def export_onnx(net: torch.nn.Module, kind: str, path: str | os.PathLike) -> Path:
    """Write ``net`` (an IResNet for ``kind='recognizer'``, a RetinaFace for ``'detector'``) as an ONNX graph at
    ``path``, traced in fp32 on the CPU (the module itself is not changed)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    module = _cpu_fp32_copy(net)
    example = torch.zeros(EXAMPLE_SHAPES[kind])
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES[kind]), dynamic_axes=dynamic_axes(kind),
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return path


def export_openvino(onnx_path: str | os.PathLike, xml_path: str | os.PathLike) -> Path:
    """Convert an exported ONNX graph to OpenVINO IR (``.xml`` + ``.bin``), keeping fp32 weights (OpenVINO's
    default would compress them to fp16)."""
    from . import require_engine

    ov = require_engine("openvino")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def export_network(net: torch.nn.Module, kind: str, fmt: str, folder: str | os.PathLike) -> list[Path]:
    """Write ``kind``'s graph in format ``fmt`` ('onnx' or 'openvino') into ``folder``; the paths written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    folder = Path(folder)
    if fmt == "onnx":
        return [export_onnx(net, kind, folder / f"{kind}.onnx")]
    onnx_path = export_onnx(net, kind, folder / f".{kind}.intermediate.onnx")
    try:
        xml = export_openvino(onnx_path, folder / f"{kind}.xml")
    finally:
        onnx_path.unlink(missing_ok=True)
    return [xml, xml.with_suffix(".bin")]


def _cpu_fp32_copy(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` itself when it is already an fp32 CPU module in eval mode, else an fp32 CPU copy."""
    params = list(net.parameters())
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) and not net.training:
        return net
    return copy.deepcopy(net).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
