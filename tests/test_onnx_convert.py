"""ONNX -> biubug6 state dict, checked against ModelScope's own RetinaFace parts and against onnxruntime."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from modelscope_facemask.model_files import assets
from modelscope_facemask.errors import CheckpointError
from modelscope_facemask.model_files.onnx_convert import expected_mobilenet_shapes, retinaface_state_dict_from_onnx

from .conftest import asset_or_skip
from .reference_retinaface import build_reference_retinaface

MOBILENET_MODELS = {"name": "mobilenet0.25", "return_layers": {"stage1": 1, "stage2": 2, "stage3": 3},
                    "in_channel": 32, "out_channel": 64}
MEAN_BGR = np.array((104, 117, 123), dtype=np.float32)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return asset_or_skip(assets.retinaface_mobilenet_onnx)


@pytest.fixture(scope="module")
def converted(onnx_bytes) -> dict[str, torch.Tensor]:
    return retinaface_state_dict_from_onnx(onnx_bytes)


@pytest.fixture(scope="module")
def reference(converted) -> torch.nn.Module:
    net = build_reference_retinaface(MOBILENET_MODELS)
    net.load_state_dict(converted, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def photo_input() -> np.ndarray:
    """A real portrait as the ONNX expects it: BGR minus (104, 117, 123), NCHW float32, 640x480."""
    path = asset_or_skip(assets.portrait_photos)["person_b_1"]
    image = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (640, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray((image.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None])


def _edited(onnx_bytes: bytes, edit) -> bytes:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    edit(model)
    return model.SerializeToString()


def test_counts_match_the_documented_model(converted):
    assert len(converted) == 300
    net = build_reference_retinaface(MOBILENET_MODELS)
    assert sum(p.numel() for p in net.parameters()) == 426_608
    assert sum(v.numel() for k, v in converted.items() if "running" not in k and "num_batches" not in k) == 426_608


def test_keys_and_shapes_equal_modelscope_reference(converted):
    ref = build_reference_retinaface(MOBILENET_MODELS).state_dict()
    assert set(converted) == set(ref)
    assert {k: tuple(v.shape) for k, v in ref.items()} == {k: tuple(v.shape) for k, v in converted.items()}
    assert expected_mobilenet_shapes() == {k: tuple(v.shape) for k, v in ref.items()}
    assert "body.stage1.0.0.weight" in converted and "ClassHead.0.conv1x1.bias" in converted


def test_batchnorm_is_identity_carrying_the_folded_bias(converted):
    assert torch.equal(converted["body.stage1.1.1.weight"], torch.full((8,), math.sqrt(1 + 1e-5)))
    assert torch.equal(converted["fpn.output1.1.running_mean"], torch.zeros(64))
    assert torch.equal(converted["ssh3.conv7x7_3.1.running_var"], torch.ones(16))
    assert converted["body.stage3.1.4.num_batches_tracked"].item() == 0
    assert converted["body.stage3.1.4.num_batches_tracked"].dtype == torch.long
    assert converted["body.stage1.1.0.weight"].shape == (8, 1, 3, 3)  # depthwise at .0
    assert converted["body.stage1.1.3.weight"].shape == (16, 8, 1, 1)  # pointwise at .3


def test_modelscope_reference_with_converted_weights_matches_onnxruntime(onnx_bytes, reference, photo_input):
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    expected = dict(zip(("loc", "conf", "landmarks"), session.run(["loc", "conf", "landmarks"], {"input": photo_input})))
    with torch.no_grad():
        loc, conf, landmarks = (t.numpy() for t in reference(torch.from_numpy(photo_input)))
    anchors = sum(2 * math.ceil(480 / s) * math.ceil(640 / s) for s in (8, 16, 32))
    for name, ours in (("loc", loc), ("conf", conf), ("landmarks", landmarks)):
        assert ours.shape == expected[name].shape == (1, anchors, {"loc": 4, "conf": 2, "landmarks": 10}[name])
        assert np.abs(ours - expected[name]).max() <= 1e-4, name
    assert conf[0, :, 1].max() > 0.9  # a real detector: the portrait's face is found


def test_cached_state_dict_equals_direct_conversion(converted):
    cached = assets.retinaface_mobilenet_state_dict()
    assert set(cached) == set(converted)
    assert all(torch.equal(cached[k], converted[k]) for k in converted)


def test_garbage_bytes_raise_checkpoint_error():
    with pytest.raises(CheckpointError, match="do not parse"):
        retinaface_state_dict_from_onnx(b"\x00not an onnx model")


def test_unknown_conv_name_raises(onnx_bytes):
    def rename(model):
        next(n for n in model.graph.node if n.name == "/fpn/merge1/merge1.0/Conv").name = "/fpn/merge9/merge9.0/Conv"

    with pytest.raises(CheckpointError, match="merge9"):
        retinaface_state_dict_from_onnx(_edited(onnx_bytes, rename))


def test_missing_head_raises(onnx_bytes):
    def drop(model):
        node = next(n for n in model.graph.node if n.name == "/landmark_head/landmark_head.2/Conv")
        model.graph.node.remove(node)

    with pytest.raises(CheckpointError, match=r"missing: \['LandmarkHead.2.conv1x1.bias'"):
        retinaface_state_dict_from_onnx(_edited(onnx_bytes, drop))


def test_wrong_shape_raises(onnx_bytes):
    from onnx import numpy_helper

    def widen(model):
        init = next(i for i in model.graph.initializer if i.name == "class_head.class_head.1.bias")
        init.CopyFrom(numpy_helper.from_array(np.zeros(6, np.float32), init.name))

    with pytest.raises(CheckpointError, match="wrong shape"):
        retinaface_state_dict_from_onnx(_edited(onnx_bytes, widen))


def test_inconsistent_duplicate_conv_raises(onnx_bytes):
    from onnx import numpy_helper

    def perturb(model):
        node = next(n for n in model.graph.node if n.name == "/ssh2/conv5X5_1/conv5X5_1.0_1/Conv")
        source = next(n for n in model.graph.node if n.name == "/ssh2/conv5X5_1/conv5X5_1.0/Conv").input[1]
        weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == source)) + 1.0
        model.graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), "perturbed_weight"))
        node.input[1] = "perturbed_weight"

    with pytest.raises(CheckpointError, match="different values"):
        retinaface_state_dict_from_onnx(_edited(onnx_bytes, perturb))
