"""Loading weights without a second copy: the file is memory-mapped and its tensors become the network's weights.

The structural property behind "peak RSS while loading <= 1.3x the file size": every parameter and buffer of a
loaded network lies inside the process's (private) mapping of its weights file, read from /proc/self/maps; the
network was never materialised with its own (randomly initialised) storage. Measuring RSS of a small net in a test
would be noise; the full-size figures are in docs/cpu-and-gpu.md (measured with the 475 MiB checkpoint).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelscope_facemask.model_files.checkpoints import TORCH_WEIGHTS, SAFETENSORS_WEIGHTS, build_and_load, read_state_dict, \
    save_state_dict
from modelscope_facemask.modelscope_adapters.configuration import CONFIGURATION_FILE
from modelscope_facemask.errors import CheckpointError
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.modelscope_adapters.model import FaceMaskModel
from modelscope_facemask.nets.iresnet import IResNet

from .fixture_data import SMALL_UNITS, link_or_copy

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges at which this process maps ``path`` (from /proc/self/maps)."""
    target = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def tensors_outside(module: torch.nn.Module, ranges: list[tuple[int, int]]) -> list[str]:
    """Names of the module's parameters and buffers whose bytes are not inside one of ``ranges``."""
    outside = []
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        first = tensor.data_ptr()
        last = first + tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
        if not any(start <= first and last <= end for start, end in ranges):
            outside.append(name)
    return outside


def plain_embeddings(weights: Path, crops: np.ndarray) -> np.ndarray:
    """The independent path: a network built normally, weights copied in by load_state_dict from a plain read."""
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    net = IResNet(SMALL_UNITS)
    net.load_state_dict(state)
    with torch.inference_mode():
        x = torch.from_numpy(((crops.astype(np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)).permute(0, 3, 1, 2)
        out = net.eval()(x.contiguous()).numpy()
    return out / np.sqrt(np.sum(out**2, -1, keepdims=True))


@pytest.fixture(params=[TORCH_WEIGHTS, SAFETENSORS_WEIGHTS])
def model_folder(request, tmp_path, small_model_dir, small_safetensors_file) -> Path:
    """A copy of the small recognizer's folder with its weights as ``pytorch_model.pt`` or ``model.safetensors``: a
    hard link to the session's file of those bytes (what save_state_dict writes for the state), never written into
    (a test that changes it replaces it: save_state_dict renames a new file into place)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(small_model_dir / CONFIGURATION_FILE, folder / CONFIGURATION_FILE)
    source = small_model_dir / TORCH_WEIGHTS if request.param == TORCH_WEIGHTS else small_safetensors_file
    link_or_copy(source, folder / request.param)
    return folder


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.Generator(np.random.PCG64(7)).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)


@linux_only
def test_loaded_recognizer_weights_are_the_mapped_file_itself(model_folder):
    weights = next(p for p in model_folder.iterdir() if p.name != CONFIGURATION_FILE)
    model = FaceMaskModel(str(model_folder), device="cpu")
    ranges = mapped_ranges(weights)
    assert ranges, f"{weights.name} is not memory-mapped"
    assert not any(t.is_meta for t in itertools.chain(model.net.parameters(), model.net.buffers()))
    assert tensors_outside(model.net, ranges) == []  # no parameter or buffer has storage of its own: no copy


@linux_only
def test_loaded_detector_weights_are_the_mapped_file_itself(small_model_dir):
    detector = FaceDetector.from_pretrained(small_model_dir / "detector", device="cpu")
    assert tensors_outside(detector.net, mapped_ranges(small_model_dir / "detector" / TORCH_WEIGHTS)) == []


def test_mapped_loading_gives_the_embeddings_of_a_plain_load(model_folder, crops):
    weights = next(p for p in model_folder.iterdir() if p.name != CONFIGURATION_FILE)
    model = FaceMaskModel(str(model_folder), device="cpu")
    np.testing.assert_allclose(model.embed(crops), plain_embeddings(weights, crops), rtol=0, atol=1e-6)


def test_writes_into_loaded_weights_never_reach_the_file(model_folder, crops):
    """The mapping is private: a write copies the page in this process; the file and later loads are unchanged."""
    weights = next(p for p in model_folder.iterdir() if p.name != CONFIGURATION_FILE)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    model = FaceMaskModel(str(model_folder), device="cpu")
    before = model.embed(crops)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.mul_(-1.0)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    assert np.array_equal(FaceMaskModel(str(model_folder), device="cpu").embed(crops), before)


def test_replacing_the_file_leaves_a_loaded_model_unchanged(model_folder, crops):
    """save_state_dict renames a new file into place: a model mapping the old one keeps its weights."""
    weights = next(p for p in model_folder.iterdir() if p.name != CONFIGURATION_FILE)
    model = FaceMaskModel(str(model_folder), device="cpu")
    before = model.embed(crops)
    state = read_state_dict(weights)
    save_state_dict({k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state.items()}, weights)
    assert float(read_state_dict(weights)["fc.weight"].abs().sum()) == 0.0
    assert np.array_equal(model.embed(crops), before)


def test_legacy_torch_files_still_load(tmp_path, small_model_dir, crops):
    """Files saved without the zip format (PyTorch < 1.6) cannot be mapped: read into memory, same results."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(small_model_dir / CONFIGURATION_FILE, folder / CONFIGURATION_FILE)
    state = torch.load(str(small_model_dir / TORCH_WEIGHTS), weights_only=True)
    torch.save(state, folder / TORCH_WEIGHTS, _use_new_zipfile_serialization=False)
    model = FaceMaskModel(str(folder), device="cpu")
    np.testing.assert_allclose(model.embed(crops), plain_embeddings(small_model_dir / TORCH_WEIGHTS, crops),
                               rtol=0, atol=1e-6)


def test_meta_build_takes_the_network_dtype_and_fills_old_batchnorm_counters(small_recognizer_state):
    """An fp16 file loads into the fp32 network as fp32; a file without num_batches_tracked gets real zeros."""
    old_half = {k: v.half() if v.is_floating_point() else v for k, v in small_recognizer_state.items()
                if not k.endswith("num_batches_tracked")}
    net = build_and_load(lambda: IResNet(SMALL_UNITS), old_half)
    for name, tensor in itertools.chain(net.named_parameters(), net.named_buffers()):
        assert not tensor.is_meta, name
        if name.endswith("num_batches_tracked"):
            assert tensor.dtype == torch.long and int(tensor) == 0
        else:
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, old_half[name].float()), name


def test_meta_build_keeps_the_strict_checks(small_recognizer_state):
    wrong = dict(small_recognizer_state)
    wrong["fc.weight"] = wrong["fc.weight"][:, :-1]
    del wrong["features.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: features\.bias.*shape mismatches: fc\.weight"):
        build_and_load(lambda: IResNet(SMALL_UNITS), wrong, source="w.pt")
    bad = {k: v.clone() for k, v in small_recognizer_state.items()}
    bad["fc.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite weights .* fc\.bias \(1 of"):
        build_and_load(lambda: IResNet(SMALL_UNITS), bad, source="w.pt")


def test_atomic_torch_save_writes_the_bytes_of_a_direct_save(tmp_path):
    """torch names a file's inner archive folder after its stem; the atomic write must not change the bytes (the
    committed regression reference records the weights' sha256)."""
    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}
    direct = tmp_path / "direct" / TORCH_WEIGHTS
    direct.parent.mkdir()
    torch.save(state, str(direct))
    atomic = save_state_dict(state, tmp_path / "atomic" / TORCH_WEIGHTS)
    assert atomic.read_bytes() == direct.read_bytes()
    assert sorted(p.name for p in atomic.parent.iterdir()) == [TORCH_WEIGHTS]  # no temporary left
