"""prior_boxes against ModelScope's PriorBox: bit-identical values and order."""
from __future__ import annotations

import pytest
import torch

from modelscope.models.cv.face_detection.retinaface.utils import PriorBox

from modelscope_facemask.faces.anchors import prior_boxes

R50_ANCHORS = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32]}


@pytest.mark.parametrize("height,width", [(640, 640), (333, 517), (1000, 750), (667, 1000), (31, 45), (1, 1)])
@pytest.mark.parametrize("clip", [False, True])
def test_prior_boxes_bit_equal_to_priorbox(height, width, clip):
    cfg = dict(R50_ANCHORS, clip=clip)
    expected = PriorBox(cfg, image_size=(height, width)).forward()
    ours = prior_boxes(height, width, cfg["min_sizes"], cfg["steps"], clip=clip)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    assert torch.equal(ours, expected)


def test_other_anchor_configuration():
    cfg = {"min_sizes": [[10, 20, 30], [50]], "steps": [4, 64], "clip": False}
    expected = PriorBox(cfg, image_size=(97, 130)).forward()
    assert torch.equal(prior_boxes(97, 130, cfg["min_sizes"], cfg["steps"]), expected)


def test_cached_result_is_safe_to_modify():
    first = prior_boxes(320, 240, R50_ANCHORS["min_sizes"], R50_ANCHORS["steps"])
    first.zero_()
    again = prior_boxes(320, 240, R50_ANCHORS["min_sizes"], R50_ANCHORS["steps"])
    expected = PriorBox(dict(R50_ANCHORS, clip=False), image_size=(320, 240)).forward()
    assert torch.equal(again, expected)


def test_mismatched_levels_rejected():
    with pytest.raises(ValueError, match="levels"):
        prior_boxes(64, 64, [[16, 32]], [8, 16])
