"""A network batch that runs out of memory is halved and retried, down to one row (then a clear error).

Before: any out-of-memory error of the recognizer or the detector propagated as PyTorch's own exception and the
whole call (every image of the list) failed, however small the batch could have been made. Simulated on the CPU by
making the network's ``forward`` raise for batches larger than a limit.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.model_files.checkpoints import load_weights
from modelscope_facemask.errors import BatchOutOfMemoryError, FaceMaskError
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.faces.images import load_image
from modelscope_facemask.faces.out_of_memory import is_out_of_memory, run_halving
from modelscope_facemask.faces.recognizer import FaceRecognizer
from modelscope_facemask.nets.iresnet import IResNet
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RetinaFace

from .fixture_data import SMALL_UNITS

ERRORS = {
    "cuda": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "runtime": lambda: RuntimeError("HIP out of memory. Tried to allocate 512 MiB"),
    "cpu_allocator": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                          "can't allocate memory: you tried to allocate 100000 bytes."),
}


def limit_batches(module: torch.nn.Module, monkeypatch, limit: int, error=ERRORS["cuda"]) -> list[int]:
    """Make ``module`` raise ``error()`` for batches larger than ``limit``; returns the list of batch sizes run."""
    forward, sizes = module.forward, []

    def limited(x, *args, **kwargs):
        if x.shape[0] > limit:
            raise error()
        sizes.append(x.shape[0])
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(module, "forward", limited)
    return sizes


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (7, 112, 112, 3), dtype=np.uint8)


@pytest.fixture()
def recognizer(small_recognizer_state) -> FaceRecognizer:
    return FaceRecognizer(load_weights(IResNet(SMALL_UNITS), small_recognizer_state), batch_size=8)


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_recognizer_batch_is_split_and_results_equal(recognizer, crops, monkeypatch, kind):
    unsplit = recognizer.embed(crops)
    same_slices = np.concatenate([recognizer.embed(crops[a:b]) for a, b in ((0, 1), (1, 3), (3, 5), (5, 7))])
    sizes = limit_batches(recognizer.net, monkeypatch, 2, ERRORS[kind])
    split = recognizer.embed(crops)
    assert sizes == [1, 2, 2, 2]  # 7 -> 3 + 4 -> (1 + 2) + (2 + 2), in order
    assert np.array_equal(split, same_slices)  # exactly what those batches give without any error
    # against the unsplit batch: only CPU convolution rounding differs with the batch size (about 1e-7 here)
    assert np.abs(split - unsplit).max() <= 1e-6


def test_recognizer_out_of_memory_at_batch_one_is_a_clear_error(recognizer, crops, monkeypatch):
    limit_batches(recognizer.net, monkeypatch, 0)
    with pytest.raises(BatchOutOfMemoryError, match="recognizer ran out of device memory on a batch of 1") as info:
        recognizer.embed(crops[:3])
    assert isinstance(info.value, FaceMaskError) and isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_other_errors_are_not_split(recognizer, crops, monkeypatch):
    calls = []

    def broken(x):
        calls.append(x.shape[0])
        raise RuntimeError("Given groups=1, weight of size [64, 3, 3, 3], expected input to have 3 channels")

    monkeypatch.setattr(recognizer.net, "forward", broken)
    with pytest.raises(RuntimeError, match="expected input") as info:
        recognizer.embed(crops)
    assert calls == [7] and not isinstance(info.value, FaceMaskError)
    assert not is_out_of_memory(ValueError("out of memory"))  # only RuntimeErrors carry the phrase


def test_run_halving_keeps_order():
    def run(start: int, stop: int) -> list[int]:
        if stop - start > 3:
            raise RuntimeError("CUDA out of memory")
        return list(range(start, stop))

    assert sum(run_halving(run, 13, what="test"), []) == list(range(13))


def test_detector_batch_is_split_and_results_equal(mobilenet_state, portraits, monkeypatch):
    images = [cv2.resize(load_image(portraits[n]), (360, 440)) for n in ("person_a_2", "person_b_1", "impostor_2")]
    detector = FaceDetector(load_weights(RetinaFace(MOBILENET025_CONFIG), mobilenet_state), batch_size=8)
    unsplit = detector.detect(images)
    one_by_one = [detector.detect([image])[0] for image in images]
    sizes = limit_batches(detector.net, monkeypatch, 1)
    split = detector.detect(images)
    assert sizes == [1, 1, 1]
    assert all(len(d.scores) > 0 for d in unsplit)
    for a, b, c in zip(one_by_one, split, unsplit):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.landmarks, b.landmarks)
        assert np.array_equal(a.scores, b.scores)
        # against the batch of 3: only CPU convolution rounding differs with the batch size (about 2e-5 px here)
        assert len(b.scores) == len(c.scores) and np.abs(b.landmarks - c.landmarks).max() <= 1e-3


def test_pipeline_list_survives_recognizer_out_of_memory(small_model_dir, portraits, monkeypatch):
    pipe = FaceMaskPipeline(str(small_model_dir), device="cpu")
    photos = [str(p) for p in portraits.values()]
    unsplit = pipe(photos)
    sizes = limit_batches(pipe.model.net, monkeypatch, 2)
    split = pipe(photos)
    assert max(sizes) <= 2 and sum(sizes) == len(photos)
    for a, b in zip(unsplit, split):
        assert a.keys() == b.keys() and "error" not in b
        for key in a:  # detection is untouched; embeddings differ only by batch-size rounding (about 1e-7)
            assert np.array_equal(a[key], b[key]) if key != "img_embedding" else np.abs(a[key] - b[key]).max() <= 1e-6
