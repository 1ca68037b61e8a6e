"""Hostile configuration.json values are refused with a ConfigurationError naming the file and the key, before any
network is built: architecture values bounded by what the weights file could hold, every RetinaFace ``models`` value
checked in one place (RetinaFaceConfig)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.tools.hub.repository_writers import facemask_configuration
from modelscope_facemask.modelscope_adapters.model import FaceMaskModel
from modelscope_facemask.nets import iresnet, retinaface
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RESNET50_CONFIG, RetinaFaceConfig

from .fixture_data import SMALL_UNITS


def _folder_with(tmp_path: Path, configuration: dict, weights: Path) -> Path:
    """A model folder holding ``configuration`` and a link to an existing weights file."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "configuration.json").write_text(json.dumps(configuration), encoding="utf-8")
    os.symlink(weights, folder / weights.name)
    return folder


@pytest.mark.parametrize("last", [300_000, 3_000_000, 10**30])
def test_recognizer_units_no_weights_file_could_hold_are_refused_before_building(tmp_path, small_model_dir, last):
    """[1, 2, 2, 300000] took 150 s and 5.5 GB (3,000,000: std::bad_alloc) before failing the strict load."""
    folder = _folder_with(tmp_path, facemask_configuration(units=(1, 2, 2, last)), small_model_dir / "pytorch_model.pt")
    with pytest.raises(ConfigurationError) as info:
        FaceMaskModel(str(folder), device="cpu")
    message = str(info.value)
    assert f"{str(folder / 'configuration.json')!r}: model.backbone.units [1, 2, 2, {last}]" in message
    assert "pytorch_model.pt" in message and "set the values the weights were trained with" in message


DETECTOR_CASES = {  # models key: hostile value (each refused naming "models.<key>")
    "in_channel": [-5, 0, 64, 10**6, "32", 32.0, True],
    "out_channel": [0, -4, 6, 10**9, "64", None],
    "steps": [[0, 0, 0], [4, 8, 16], [8, 16], "8", [8.0, 16, 32]],
    "min_sizes": [[[0, 32], [64, 128], [256, 512]], [[-16, 32], [64, 128], [256, 512]],
                  [[10**400, 32], [64, 128], [256, 512]], [[16.5, 32], [64, 128], [256, 512]], [16, 32]],
    "variance": [[0, 0.2], [-0.1, 0.2], [float("nan"), 0.2], [float("inf"), 0.2], [1e308 * 10, 0.2], [0.1],
                 ["0.1", 0.2], [10**400, 0.2], [True, 0.2], 0.1],
    "clip": ["false", 1],
    "channel_order": [["BGR"], 5],
    "name": [5, ["mobilenet0.25"], "resnet18"],
    "return_layers": [[1, 2, 3], {"stage1": "1", "stage2": 2, "stage3": 3}],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in DETECTOR_CASES.items() for v in values],
                         ids=lambda x: repr(x)[:24])
def test_hostile_detector_values_are_configuration_errors_naming_file_and_key(tmp_path, mobilenet_detector_dir, key,
                                                                              value):
    """in_channel -5 gave a raw RuntimeError, steps [0, 0, 0] a ZeroDivisionError for every image."""
    models = {**MOBILENET025_CONFIG.to_dict(), key: value}
    folder = _folder_with(tmp_path, {"task": "face-detection", "models": models},
                          mobilenet_detector_dir / "pytorch_model.pt")
    with pytest.raises(ConfigurationError) as info:
        FaceDetector.from_pretrained(folder)
    message = str(info.value)
    assert message.startswith(f"{str(folder / 'configuration.json')!r}: models.{key} "), message


def test_detector_width_no_weights_file_could_hold_is_refused(tmp_path, mobilenet_detector_dir):
    """out_channel 4092 is a valid width, but the network it describes (1.3e9 values) cannot be in a 1.8 MB file."""
    models = {**MOBILENET025_CONFIG.to_dict(), "out_channel": 4092}
    folder = _folder_with(tmp_path, {"task": "face-detection", "models": models},
                          mobilenet_detector_dir / "pytorch_model.pt")
    with pytest.raises(ConfigurationError, match=r"configuration\.json': models\.out_channel 4092 describes a network "
                                                 r"of [\d,]+ weight values, but its weights file"):
        FaceDetector.from_pretrained(folder)


@pytest.mark.parametrize("units", [SMALL_UNITS, (2, 1, 3, 2), iresnet.DEPTH_UNITS[252]])
def test_recognizer_element_count_equals_the_built_network(units):
    """The bound is exact (never refuses a weights file that fits): compared with the network torch builds."""
    with torch.device("meta"):
        net = iresnet.IResNet(units)
    assert iresnet.state_dict_elements(units) == sum(t.numel() for t in net.state_dict().values())


_WIDE_MOBILENET = RetinaFaceConfig(name="mobilenet0.25", return_layers=MOBILENET025_CONFIG.return_layers,
                                   in_channel=32, out_channel=256)


@pytest.mark.parametrize("config", [MOBILENET025_CONFIG, RESNET50_CONFIG, RetinaFaceConfig(out_channel=12),
                                    _WIDE_MOBILENET], ids=lambda c: f"{c.name}-{c.out_channel}")
def test_detector_element_count_equals_the_built_network(config):
    with torch.device("meta"):
        net = retinaface.RetinaFace(config)
    assert retinaface.state_dict_elements(config) == sum(t.numel() for t in net.state_dict().values())


def test_official_detector_configurations_still_load(tmp_path, mobilenet_detector_dir):
    """The values the bounds must accept: the mobilenet0.25 folder as written, and ints where floats belong."""
    assert FaceDetector.from_pretrained(mobilenet_detector_dir).config == MOBILENET025_CONFIG
    assert RetinaFaceConfig.from_dict({**RESNET50_CONFIG.to_dict(), "variance": [1, 1]}).variance == (1.0, 1.0)
