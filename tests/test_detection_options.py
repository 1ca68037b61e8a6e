"""The opt-in detection options ``pad_batches`` and ``batched_postprocess`` as pipeline keywords, configuration.json
keys (``preprocessor.pad_batches`` / ``preprocessor.batched_postprocess``) and CLI flags (``--pad-batches``,
``--batched-postprocess {auto,on,off}``): checked like ``det_max_side``, passed through to the detector."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.cli import common, main
from modelscope_facemask.modelscope_adapters.configuration import read_configuration
from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline
from modelscope_facemask.modelscope_adapters.preprocessor import FaceMaskPreprocessor
from modelscope_facemask.tools.regress import embedding_contract

from .fixture_data import linked_copy


def _model_copy(small_model_dir: Path, tmp_path: Path, **preprocessor) -> Path:
    folder = linked_copy(small_model_dir, tmp_path / "model")  # weights hard-linked, configuration.json copied
    path = folder / "configuration.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.setdefault("preprocessor", {}).update(preprocessor)
    path.write_text(json.dumps(config), encoding="utf-8")
    return folder


def _detection(pre: FaceMaskPreprocessor) -> tuple[bool, object]:
    settings = pre.detector.settings
    return settings.pad_batches, settings.batched_postprocess


def test_defaults_are_off_and_auto(small_model_dir: Path) -> None:
    pre = FaceMaskPreprocessor(str(small_model_dir), device="cpu")
    assert _detection(pre) == (False, None)
    assert not pre.detector.uses_batched_postprocess  # auto on the CPU: the numpy path


def test_keywords_reach_the_detector(small_model_dir: Path) -> None:
    pipe = FaceMaskPipeline(str(small_model_dir), device="cpu", pad_batches=True, batched_postprocess=True)
    assert _detection(pipe.preprocessor) == (True, True) and pipe.preprocessor.detector.uses_batched_postprocess
    pipe = FaceMaskPipeline(str(small_model_dir), device="cpu", batched_postprocess=False)
    assert _detection(pipe.preprocessor) == (False, False)


@pytest.mark.parametrize("name", ["pad_batches", "batched_postprocess"])
@pytest.mark.parametrize("value", ["true", "false", 1, 0, [True]])
def test_wrong_types_are_configuration_errors(small_model_dir: Path, name: str, value) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{name} must be True") as info:
        FaceMaskPipeline(str(small_model_dir), device="cpu", **{name: value})
    assert repr(value) in str(info.value)
    with pytest.raises(ConfigurationError, match=rf"^{name} must be True"):
        FaceMaskPreprocessor(str(small_model_dir), device="cpu", **{name: value})


@pytest.mark.parametrize("key, value", [("pad_batches", "yes"), ("pad_batches", None), ("pad_batches", 1),
                                        ("batched_postprocess", "auto"), ("batched_postprocess", 0)])
def test_bad_configuration_values_name_the_file_and_key(small_model_dir: Path, tmp_path: Path, key, value) -> None:
    folder = _model_copy(small_model_dir, tmp_path, **{key: value})
    with pytest.raises(ConfigurationError, match=rf"configuration\.json.*preprocessor\.{key} must be true"):
        read_configuration(folder)
    with pytest.raises(ConfigurationError, match=rf"preprocessor\.{key}"):
        FaceMaskPipeline(str(folder), device="cpu")


def test_configuration_values_used_and_keywords_override(small_model_dir: Path, tmp_path: Path) -> None:
    folder = _model_copy(small_model_dir, tmp_path, pad_batches=True, batched_postprocess=True)
    assert _detection(FaceMaskPreprocessor(str(folder), device="cpu")) == (True, True)
    assert _detection(FaceMaskPreprocessor(str(folder), device="cpu", pad_batches=False,
                                           batched_postprocess=None)) == (False, None)
    folder = _model_copy(small_model_dir, tmp_path / "null", batched_postprocess=None)
    assert _detection(FaceMaskPreprocessor(str(folder), device="cpu")) == (False, None)


def test_regress_contract_has_pad_batches_only_when_on_and_never_batched_postprocess(small_model_dir: Path) -> None:
    plain = embedding_contract(FaceMaskPipeline(str(small_model_dir), device="cpu", batched_postprocess=True), 1)
    assert "pad_batches" not in plain["detection_settings"]
    assert "batched_postprocess" not in plain["detection_settings"]
    assert plain == embedding_contract(FaceMaskPipeline(str(small_model_dir), device="cpu"), 1)
    padded = embedding_contract(FaceMaskPipeline(str(small_model_dir), device="cpu", pad_batches=True), 1)
    assert padded["detection_settings"]["pad_batches"] is True


def test_keyword_results_equal_the_detector_settings_path(small_model_dir: Path, portraits) -> None:
    """batched_postprocess=True gives the numpy path's results (equal outputs, the contract's premise)."""
    photos = [str(portraits[k]) for k in ("person_a_1", "person_b_1")]
    default = FaceMaskPipeline(str(small_model_dir), device="cpu", max_faces=None)(photos)
    batched = FaceMaskPipeline(str(small_model_dir), device="cpu", max_faces=None, batched_postprocess=True)(photos)
    for a, b in zip(default, batched):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
        np.testing.assert_allclose(a["img_embedding"], b["img_embedding"], atol=1e-4)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    common.add_model_options(parser)
    return parser.parse_args(list(argv))


def test_cli_flags(small_model_dir: Path, portraits, capsys) -> None:
    base = ["--model", str(small_model_dir), "--device", "cpu"]
    assert common.detection_options(_parse(*base)) == {}
    args = _parse(*base, "--pad-batches", "--batched-postprocess", "on")
    assert common.detection_options(args) == {"pad_batches": True, "batched_postprocess": True}
    assert _detection(common.open_preprocessor(args)) == (True, True)
    assert _detection(common.open_pipeline(args).preprocessor) == (True, True)
    assert common.detection_options(_parse(*base, "--batched-postprocess", "off")) == {"batched_postprocess": False}
    assert common.detection_options(_parse(*base, "--batched-postprocess", "auto")) == {"batched_postprocess": None}
    photo = str(portraits["person_b_1"])
    assert main(["embed", photo, *base, "--batched-postprocess", "yes"]) == 2
    assert "--batched-postprocess" in capsys.readouterr().err


def test_detection_batch_is_one_image_on_the_cpu_unless_padded() -> None:
    """Measured on 2 CPU threads (RetinaFace-R50, 640x640): batches of 8 cost 0.71 s per image, single images 0.45 s."""
    import torch

    from modelscope_facemask.faces.detector import DETECTION_BATCH, DetectionSettings, detection_batch_size

    assert detection_batch_size(torch.device("cpu"), DetectionSettings()) == 1
    assert detection_batch_size(torch.device("cpu"), DetectionSettings(pad_batches=True)) == DETECTION_BATCH == 8
    assert detection_batch_size(torch.device("cuda", 0), DetectionSettings()) == DETECTION_BATCH
