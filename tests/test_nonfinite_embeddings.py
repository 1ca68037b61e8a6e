"""A non-finite embedding is never returned: the image gets an ``error`` (list call) or an ``EmbeddingError`` raises.

Faults are injected into the recognizer's output with a forward hook on its last layer (NaN, Inf, or an all-zero
vector, which L2 normalisation turns into 0/0). Before: such rows were returned as embeddings full of NaN.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.pipelines.base import Pipeline
from modelscope.utils.constant import Tasks

from modelscope_facemask.errors import EmbeddingError, FaceMaskError

from .fixture_data import OUTPUT_KEYS as KEYS

FAULTS = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0}


@pytest.fixture(scope="module")
def pipe(small_model_dir):
    return pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu")


@pytest.fixture(scope="module")
def photos(portraits) -> list[str]:
    return [str(portraits[n]) for n in ("person_a_1", "impostor_1", "person_b_2")]


class _Fault:
    """Forward hook on the recognizer's last layer: overwrite the output rows of crops number ``rows`` (counted over
    every batch since installation) with ``value`` (``0.0`` zeroes the whole row)."""

    def __init__(self, net: torch.nn.Module, rows: set[int], value: float) -> None:
        self.rows, self.value, self.seen = rows, value, 0
        self.handle = net.features.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        output = output.clone()
        for i in range(len(output)):
            if self.seen + i in self.rows:
                if self.value == 0.0:
                    output[i] = 0.0
                else:
                    output[i, 5] = self.value
        self.seen += len(output)
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_list_call_marks_only_the_faulty_image(pipe, photos, fault):
    clean = pipe(photos)
    with _Fault(pipe.model.net, {1}, FAULTS[fault]):
        outs = pipe(photos)
    assert "non-finite embedding" in outs[1]["error"] and photos[1] in outs[1]["error"]
    assert outs[1][OutputKeys.IMG_EMBEDDING].shape == (0, 512) and outs[1][OutputKeys.SCORES].shape == (0,)
    for i in (0, 2):
        assert "error" not in outs[i]
        for key in KEYS:
            np.testing.assert_array_equal(outs[i][key], clean[i][key])
    assert all(np.isfinite(o[OutputKeys.IMG_EMBEDDING]).all() for o in outs)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_single_call_raises(pipe, photos, fault):
    with _Fault(pipe.model.net, {0}, FAULTS[fault]), pytest.raises(EmbeddingError) as info:
        pipe(photos[0])
    assert isinstance(info.value, FaceMaskError) and photos[0] in str(info.value)
    assert "face(s) [0] of 1" in str(info.value)


def test_one_bad_face_of_a_group_fails_that_image(pipe, photos, portraits):
    """max_faces=None: the second face of the first image is bad -> that image is an error, the next one is fine."""
    from modelscope_facemask.faces.images import load_image

    faces = [load_image(portraits[n]) for n in ("person_a_2", "person_b_1")]
    height = min(f.shape[0] for f in faces)
    pair = np.concatenate([f[:height] for f in faces], axis=1)
    bgr = pair[:, :, ::-1].copy()
    assert len(pipe(bgr, max_faces=None)[OutputKeys.SCORES]) == 2
    with _Fault(pipe.model.net, {1}, FAULTS["nan"]):
        outs = pipe([bgr, photos[0]], max_faces=None)
    assert "face(s) [1] of 2" in outs[0]["error"]
    assert "error" not in outs[1] and np.isfinite(outs[1][OutputKeys.IMG_EMBEDDING]).all()


def test_model_and_stages_never_return_non_finite_rows(pipe, photos):
    crops = pipe.preprocess(photos[0])["img"]
    with _Fault(pipe.model.net, {0}, FAULTS["inf"]):
        with pytest.raises(EmbeddingError, match=r"face\(s\) \[0\] of 1"):
            pipe.model.embed(crops)
    with _Fault(pipe.model.net, {0}, FAULTS["nan"]):
        with pytest.raises(EmbeddingError):
            pipe.model({"img": crops})
    with _Fault(pipe.model.net, {0}, FAULTS["zero"]):
        with pytest.raises(EmbeddingError):
            Pipeline.__call__(pipe, photos[0])
    with _Fault(pipe.model.net, {1}, FAULTS["nan"]):
        embeddings, finite = pipe.model.embed_rows(np.concatenate([crops, crops, crops]))
    assert finite.tolist() == [True, False, True] and not embeddings[1].any()
    assert np.array_equal(embeddings[0], embeddings[2])
