"""Our networks against ModelScope's own modules on identical weights (CPU, fp32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modelscope.models.cv.face_recognition.torchkit.backbone import facemask_backbone as ref_backbone

from modelscope_facemask.model_files.checkpoints import load_weights
from modelscope_facemask.faces.recognizer import FaceRecognizer
from modelscope_facemask.nets.iresnet import IResNet, iresnet286
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RESNET50_CONFIG, RetinaFace
from modelscope_facemask.tools.demo.synthetic_weights import smooth_images, synthetic_retinaface

from .fixture_data import SMALL_UNITS
from .reference_models import reference_embedding, reference_iresnet
from .reference_retinaface import build_reference_retinaface


def test_iresnet286_matches_reference_layout():
    ours, ref = iresnet286().state_dict(), ref_backbone.iresnet286().state_dict()
    assert list(ours) == list(ref)
    assert len(ours) == 1324
    assert all(ours[k].shape == ref[k].shape for k in ref)
    assert sum(p.numel() for p in iresnet286().parameters()) == 124_393_216


def test_full_recognizer_embeddings_match_reference(full_recognizer_state):
    crops_rgb = smooth_images(3, 112, 112, seed=11)
    ref = reference_iresnet((6, 21, 66, 6), full_recognizer_state)
    expected = np.concatenate([reference_embedding(ref, c[:, :, ::-1]) for c in crops_rgb])
    ours = FaceRecognizer(load_weights(iresnet286(), full_recognizer_state)).embed(crops_rgb)
    assert ours.dtype == np.float32 and ours.shape == (3, 512)
    assert np.abs(ours - expected).max() <= 1e-5
    # the test model is discriminative: different crops give clearly different embeddings
    assert (ours @ ours.T)[np.triu_indices(3, 1)].max() < 0.9


@pytest.mark.parametrize("units", [SMALL_UNITS, (2, 1, 3, 1)])
def test_small_recognizer_matches_reference(units, small_recognizer_state):
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer

    state = small_recognizer_state if tuple(units) == SMALL_UNITS else synthetic_recognizer(units, seed=3).state_dict()
    ref = reference_iresnet(units, state)
    crops_rgb = smooth_images(5, 112, 112, seed=12)
    expected = np.concatenate([reference_embedding(ref, c[:, :, ::-1]) for c in crops_rgb])
    ours = FaceRecognizer(load_weights(IResNet(units), state), batch_size=2).embed(crops_rgb)
    assert np.abs(ours - expected).max() <= 1e-5


def _raw_outputs(net: nn.Module, image: np.ndarray):
    x = torch.from_numpy(image.astype(np.float32) - np.array((104, 117, 123), np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net(x.contiguous())


@pytest.mark.parametrize("config,size", [(RESNET50_CONFIG, (320, 416)), (MOBILENET025_CONFIG, (333, 517))])
def test_retinaface_raw_outputs_match_reference(config, size):
    net = synthetic_retinaface(config, seed=5).eval()
    ref = build_reference_retinaface(config.to_dict())
    ref.load_state_dict(net.state_dict(), strict=True)
    ref.eval()
    image = smooth_images(1, *size, seed=21)[0]
    for ours, theirs in zip(_raw_outputs(net, image), _raw_outputs(ref, image)):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() <= 1e-4


def test_retinaface_state_dict_keys_match_reference():
    for config in (RESNET50_CONFIG, MOBILENET025_CONFIG):
        ours = RetinaFace(config).state_dict()
        ref = build_reference_retinaface(config.to_dict()).state_dict()
        assert list(ours) == list(ref)
        assert all(ours[k].shape == ref[k].shape for k in ref)
