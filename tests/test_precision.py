"""The ``precision`` option (fp32 default, fp16 on CUDA, bf16): keyword, configuration.json, CLI, casting, fidelity.

Before: everything ran in fp32 and there was no way to ask for anything else (an unknown ``precision=`` keyword was
logged and ignored). Bounds below come from one measurement on this project's CPU (small recognizer, real
mobilenet0.25 detector, the six licensed portraits), with the margin stated beside each bound.
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
import torch

from modelscope_facemask import FaceMaskPipeline, FaceMaskPreprocessor
from modelscope_facemask.engines import precision as precision_module
from modelscope_facemask.model_files.checkpoints import load_weights
from modelscope_facemask.cli import main
from modelscope_facemask.cli.common import open_pipeline, open_preprocessor
from modelscope_facemask.cli.env import collect
from modelscope_facemask.modelscope_adapters.configuration import facemask_settings, read_configuration
from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.faces.recognizer import FaceRecognizer, crops_to_tensor, l2_normalise
from modelscope_facemask.modelscope_adapters.model import FaceMaskModel
from modelscope_facemask.nets.iresnet import IResNet
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RetinaFace

from .fixture_data import SMALL_UNITS, linked_copy

BAD_VALUES = ["fp64", 16, "FP16 ", "bf16 ", "float16", torch.float16, "", True]

#: bf16 against fp32, measured 2026-11-30 on the 2-core AVX2 CPU: recognizer on identical crops min cosine 0.99993
#: (bound: 7x the measured deviation 7e-5). Detector (mobilenet0.25 in bf16), measured 2026-12-01 on a 2-core Xeon with
#: AMX after the softmax moved to float32: largest box-corner / landmark shift 0.97 / 1.19 px on faces 74-305 px
#: wide, at most 0.44 % of the face width (bound 1.5 %, about 3.4x); score differences at most 0.0003 (bound 0.001).
#: Before that fix the bf16 softmax rounded every score above 0.998 to 1.0, NMS chose among tied anchors, and
#: landmarks moved by up to 10 px (4.1 % of the face width).
MIN_RECOGNIZER_COSINE = 0.9995
MAX_SHIFT_OF_FACE_WIDTH = 0.015
MAX_SCORE_DIFFERENCE = 0.001


@pytest.fixture(scope="module")
def photos(portraits) -> list[str]:
    return [str(p) for p in portraits.values()]


@pytest.fixture(scope="module")
def fp32_pipe(small_model_dir):
    return FaceMaskPipeline(str(small_model_dir), device="cpu")


@pytest.fixture(scope="module")
def bf16_pipe(small_model_dir):
    return FaceMaskPipeline(str(small_model_dir), device="cpu", precision="bf16")


@pytest.fixture(scope="module")
def fp32_outputs(fp32_pipe, photos):
    return fp32_pipe(photos)


def test_fp32_is_the_default_and_bit_identical(small_model_dir, fp32_pipe, fp32_outputs, photos):
    explicit = FaceMaskPipeline(str(small_model_dir), device="cpu", precision="fp32")(photos)
    assert fp32_pipe.precision == "fp32" and fp32_pipe.model.precision == "fp32"
    for a, b in zip(fp32_outputs, explicit):
        for key in a:
            assert np.array_equal(a[key], b[key]), key
    # the networks are left exactly as before: float32 and contiguous (no channels_last in fp32)
    for net in (fp32_pipe.model.net, fp32_pipe.preprocessor.detector.net):
        assert all(p.dtype == torch.float32 and p.is_contiguous() for p in net.parameters())


def test_fp32_recognizer_and_detector_compute_what_they_did_before(small_recognizer_state, mobilenet_state, portraits):
    """The pre-precision computation, written out: the network on the float32 NCHW input, outputs unchanged."""
    net = load_weights(IResNet(SMALL_UNITS), small_recognizer_state).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    with torch.inference_mode():
        before = l2_normalise(net(crops_to_tensor(crops)).float().numpy())
    assert np.array_equal(FaceRecognizer(load_weights(IResNet(SMALL_UNITS), small_recognizer_state)).embed(crops),
                          before)
    det_net = load_weights(RetinaFace(MOBILENET025_CONFIG), mobilenet_state).eval()
    batch = np.random.default_rng(1).normal(0, 50, (1, 3, 96, 128)).astype(np.float32)
    with torch.inference_mode():
        expected = det_net(torch.from_numpy(batch))
    got = FaceDetector(load_weights(RetinaFace(MOBILENET025_CONFIG), mobilenet_state))._raw_outputs_nchw(batch)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_bf16_weights_cast_once_channels_last(bf16_pipe, photos):
    nets = (bf16_pipe.model.net, bf16_pipe.preprocessor.detector.net)
    for net in nets:
        params = list(net.parameters())
        assert all(p.dtype == torch.bfloat16 for p in params)
        four_d = [p for p in params if p.dim() == 4]
        assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    pointers = [[p.data_ptr() for p in net.parameters()] for net in nets]
    bf16_pipe(photos[0])
    assert pointers == [[p.data_ptr() for p in net.parameters()] for net in nets]  # not re-cast per call


def test_bf16_finds_the_same_faces_as_fp32(bf16_pipe, fp32_outputs, photos):
    outputs = bf16_pipe(photos)
    for path, a, b in zip(photos, fp32_outputs, outputs):
        assert len(a["boxes"]) == len(b["boxes"]) == 1, path
        assert b["img_embedding"].dtype == np.float32 and b["boxes"].dtype == np.float32
        assert np.allclose(np.linalg.norm(b["img_embedding"], axis=1), 1.0, atol=1e-6)
        width = a["boxes"][0, 2] - a["boxes"][0, 0]
        shift = max(np.abs(a["boxes"] - b["boxes"]).max(), np.abs(a["keypoints"] - b["keypoints"]).max())
        assert shift <= MAX_SHIFT_OF_FACE_WIDTH * width, (path, shift, width)
        assert np.abs(a["scores"] - b["scores"]).max() <= MAX_SCORE_DIFFERENCE
        assert (b["scores"] < 1.0).all()  # float32 softmax: bf16 would round these near-1 scores to 1.0 (ties)


def test_bf16_recognizer_embeddings_match_fp32(small_recognizer_state, fp32_pipe, photos):
    """On identical crops (alignment is sensitive to landmark shifts, and the synthetic recognizer to crops)."""
    crops = np.concatenate([fp32_pipe.preprocessor.prepare([p])[0].crops for p in photos])
    fp32 = FaceRecognizer(load_weights(IResNet(SMALL_UNITS), small_recognizer_state)).embed(crops)
    bf16 = FaceRecognizer(load_weights(IResNet(SMALL_UNITS), small_recognizer_state), precision="bf16").embed(crops)
    assert bf16.dtype == np.float32
    cosine = np.sum(fp32 * bf16, axis=1)
    assert cosine.min() >= MIN_RECOGNIZER_COSINE, cosine
    assert not np.array_equal(fp32, bf16)  # bf16 really ran


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_bad_precision_values_are_refused_everywhere(small_model_dir, value):
    with pytest.raises(ConfigurationError, match="precision"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", precision=value)
    with pytest.raises(ConfigurationError, match="precision"):
        FaceMaskModel(str(small_model_dir), device="cpu", precision=value)
    with pytest.raises(ConfigurationError, match="precision"):
        FaceMaskPreprocessor(str(small_model_dir), device="cpu", precision=value, use_det=False)
    with pytest.raises(ConfigurationError, match="model.precision"):
        facemask_settings({"model": {"precision": value if not isinstance(value, torch.dtype) else str(value)}})


def test_fp16_on_the_cpu_is_refused_with_the_fix(small_model_dir):
    with pytest.raises(ConfigurationError, match="CUDA") as info:
        FaceMaskPipeline(str(small_model_dir), device="cpu", precision="fp16")
    assert "bf16" in str(info.value) and "fp32" in str(info.value)
    with pytest.raises(ConfigurationError, match="CUDA"):  # also when detection is off (the detector loads later)
        FaceMaskPreprocessor(str(small_model_dir), device="cpu", precision="fp16", use_det=False)


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_hardware_warns(small_model_dir, monkeypatch, caplog, has_bf16):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: has_bf16)
    precision_module._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        pipe = FaceMaskPipeline(str(small_model_dir), device="cpu", precision="bf16")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "bf16 hardware" in r.getMessage()]
    assert len(warnings) == (0 if has_bf16 else 1)  # once, not once per network
    assert any("runs on cpu in bf16" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert pipe.precision == "bf16"


def test_modelscope_pipeline_keyword(small_model_dir):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    pipe = pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu", precision="bf16")
    assert isinstance(pipe, FaceMaskPipeline) and pipe.precision == "bf16"
    assert next(pipe.preprocessor.detector.net.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigurationError, match="precision"):
        pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu", precision="half")


def test_info_line_names_fp32_by_default(small_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        FaceMaskPipeline(str(small_model_dir), device="cpu")
    assert any(r.getMessage() == "FaceMask pipeline runs on cpu in fp32, engine torch" for r in caplog.records)


def test_configuration_key_and_keyword_override(small_model_dir, tmp_path):
    folder = linked_copy(small_model_dir, tmp_path / "bf16_model")  # weights hard-linked, configuration.json copied
    config = json.loads((folder / "configuration.json").read_text())
    config["model"]["precision"] = "bf16"
    (folder / "configuration.json").write_text(json.dumps(config))
    assert facemask_settings(read_configuration(folder)).precision == "bf16"
    pipe = FaceMaskPipeline(str(folder), device="cpu", use_det=True)
    assert pipe.precision == "bf16" and pipe.preprocessor.detector.precision == "bf16"
    assert next(pipe.model.net.parameters()).dtype == torch.bfloat16
    pipe = FaceMaskPipeline(str(folder), device="cpu", precision="fp32")
    assert pipe.precision == "fp32" and next(pipe.preprocessor.detector.net.parameters()).dtype == torch.float32
    config["model"]["precision"] = "FP16"
    (folder / "configuration.json").write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="model.precision"):
        FaceMaskPipeline(str(folder), device="cpu")


def test_given_model_with_another_precision_is_refused(small_model_dir):
    model = FaceMaskModel(str(small_model_dir), device="cpu")
    with pytest.raises(ConfigurationError, match="runs in 'fp32'"):
        FaceMaskPipeline(model, device="cpu", precision="bf16")
    assert FaceMaskPipeline(model, device="cpu").precision == "fp32"


def test_cli_precision_flag_and_env(small_model_dir, capsys):
    args = argparse.Namespace(model=str(small_model_dir), detector=None, device="cpu", precision="bf16")
    assert open_pipeline(args).precision == "bf16"
    assert open_preprocessor(args).detector.precision == "bf16"
    assert collect("cpu", False, "bf16")["precision"] == "bf16"
    assert collect("cpu", False)["precision"] == "fp32"
    assert "CUDA" in collect("cpu", False, "fp16")["precision_problem"]
    assert main(["env", "--device", "cpu", "--precision", "bf16"]) == 0
    assert "precision bf16" in capsys.readouterr().out
    assert main(["env", "--device", "cpu", "--precision", "fp64"]) == 2  # argparse choices
    assert main(["embed", "--help"]) == 0
    assert "--precision" in capsys.readouterr().out
