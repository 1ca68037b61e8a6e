"""Weights loading: official layouts accepted, wrong files rejected with a useful message."""
from __future__ import annotations

import pickle

import pytest
import torch

from modelscope_facemask.model_files.checkpoints import find_weights_file, load_weights, read_state_dict, save_state_dict
from modelscope_facemask.errors import CheckpointError
from modelscope_facemask.nets.iresnet import IResNet
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RESNET50_CONFIG, RetinaFace

UNITS = (1, 1, 1, 1)


@pytest.fixture()
def state():
    torch.manual_seed(0)
    return IResNet(UNITS).state_dict()


@pytest.mark.parametrize("layout", ["plain", "module", "wrapped", "wrapped_module"])
def test_official_layouts_load(tmp_path, state, layout):
    data = dict(state)
    if "module" in layout:
        data = {f"module.{k}": v for k, v in data.items()}
    if "wrapped" in layout:
        data = {"state_dict": data}
    torch.save(data, tmp_path / "pytorch_model.pt")
    net = load_weights(IResNet(UNITS), read_state_dict(tmp_path / "pytorch_model.pt"))
    assert all(torch.equal(net.state_dict()[k], state[k]) for k in state)


def test_safetensors_preferred_when_present(tmp_path, state):
    save_state_dict(state, tmp_path / "pytorch_model.pt")
    assert find_weights_file(tmp_path).name == "pytorch_model.pt"
    save_state_dict(state, tmp_path / "model.safetensors")
    assert find_weights_file(tmp_path).name == "model.safetensors"
    loaded = read_state_dict(tmp_path / "model.safetensors")
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_wrong_checkpoint_lists_missing_unexpected_and_shapes():
    wrong = RetinaFace(MOBILENET025_CONFIG).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_weights(RetinaFace(RESNET50_CONFIG), wrong, source="det.pt")
    message = str(info.value)
    assert "det.pt" in message and "missing keys" in message and "unexpected keys" in message
    assert "shape mismatches" in message and "fpn.output1.0.weight" in message


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no weights"):
        find_weights_file(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "evil.pt")


def test_non_tensor_entries_rejected(tmp_path):
    torch.save({"epoch": 3, "w": torch.zeros(1)}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="not a tensor"):
        read_state_dict(tmp_path / "meta.pt")


def test_safetensors_file_follows_the_umask(tmp_path, state):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_state_dict(state, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_checkpoints_without_batchnorm_counters_load(state):
    """Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked; every other key stays mandatory."""
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    net = load_weights(IResNet(UNITS), old_style)
    assert all(torch.equal(net.state_dict()[k], state[k]) for k in old_style)
    del old_style["bn2.running_var"]
    with pytest.raises(CheckpointError, match="bn2.running_var"):
        load_weights(IResNet(UNITS), old_style)


def _poisoned(state, **values):
    """A copy of ``state`` with the first element of each named tensor set to a value."""
    out = {k: v.clone() for k, v in state.items()}
    for key, value in values.items():
        out[key.replace("__", ".")].view(-1)[0] = value
    return out


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path, state, suffix):
    """Before: loaded silently; every embedding of such a network is NaN."""
    bad = _poisoned(state, fc__weight=float("nan"), bn2__running_var=float("inf"))
    path = save_state_dict(bad, tmp_path / f"weights{suffix}")
    with pytest.raises(CheckpointError) as info:
        load_weights(IResNet(UNITS), read_state_dict(path), source=str(path))
    message = str(info.value)
    assert str(path) in message and "non-finite weights (NaN or Inf) in 2 tensor(s)" in message
    assert f"fc.weight (1 of {state['fc.weight'].numel()} values)" in message and "bn2.running_var (1 of" in message
    assert load_weights(IResNet(UNITS), state)  # the clean state still loads


@pytest.mark.parametrize("weights", ["pytorch_model.pt", "model.safetensors"])
def test_model_folders_with_non_finite_weights_do_not_load(tmp_path, state, weights):
    """The recognizer (FaceMaskModel) and the detector (FaceDetector) both refuse them at construction."""
    from modelscope_facemask.faces.detector import FaceDetector
    from modelscope_facemask.tools.hub.repository_writers import facemask_configuration, write_detector_repo, write_facemask_repo
    from modelscope_facemask.modelscope_adapters.model import FaceMaskModel

    recognizer = write_facemask_repo(tmp_path / "rec", _poisoned(state, input_layer__0__weight=float("-inf")),
                                     facemask_configuration(units=UNITS))
    if weights != "pytorch_model.pt":
        save_state_dict(read_state_dict(recognizer / "pytorch_model.pt"), recognizer / weights)
        (recognizer / "pytorch_model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"input_layer\.0\.weight \(1 of"):
        FaceMaskModel(str(recognizer), device="cpu")
    detector_state = _poisoned(RetinaFace(MOBILENET025_CONFIG).state_dict(), ClassHead__0__conv1x1__bias=float("nan"))
    detector = write_detector_repo(tmp_path / "det", detector_state, MOBILENET025_CONFIG)
    if weights != "pytorch_model.pt":
        save_state_dict(read_state_dict(detector / "pytorch_model.pt"), detector / weights)
        (detector / "pytorch_model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"ClassHead\.0\.conv1x1\.bias \(1 of"):
        FaceDetector.from_pretrained(detector, device="cpu")
