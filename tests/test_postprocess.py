"""Decode, NMS and the whole post-processing against ModelScope's RetinaFace reference code."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from modelscope.models.cv.face_detection.retinaface.detection import RetinaFaceDetection
from modelscope.models.cv.face_detection.retinaface.utils import PriorBox, decode, decode_landm, py_cpu_nms

from modelscope_facemask.faces.anchors import prior_boxes
from modelscope_facemask.faces.postprocess import decode_boxes, decode_landmarks, nms, postprocess_detections

from .fixture_data import link_or_copy

R50_MODELS = {
    "name": "Resnet50", "pretrain": False, "return_layers": {"layer2": 1, "layer3": 2, "layer4": 3},
    "in_channel": 256, "out_channel": 256, "min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32],
    "variance": [0.1, 0.2], "clip": False,
}
VARIANCE = R50_MODELS["variance"]

# ModelScope's RetinaFace calls torchvision's resnet50(pretrained=False), deprecated since torchvision 0.13.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


# ---------------------------------------------------------------- decode

@pytest.mark.parametrize("height,width", [(640, 480), (333, 517)])
def test_decode_equal_to_reference(height, width):
    priors = PriorBox(R50_MODELS, image_size=(height, width)).forward()
    gen = torch.Generator().manual_seed(height)
    loc = torch.randn(len(priors), 4, generator=gen) * 0.5
    pre = torch.randn(len(priors), 10, generator=gen) * 0.5
    assert torch.equal(decode_boxes(loc, priors, VARIANCE), decode(loc, priors, VARIANCE))
    assert torch.equal(decode_landmarks(pre, priors, VARIANCE), decode_landm(pre, priors, VARIANCE))


def test_decode_batched_equal_to_reference_per_image():
    priors = PriorBox(R50_MODELS, image_size=(96, 128)).forward()
    gen = torch.Generator().manual_seed(7)
    loc = torch.randn(3, len(priors), 4, generator=gen)
    pre = torch.randn(3, len(priors), 10, generator=gen)
    boxes, points = decode_boxes(loc, priors, VARIANCE), decode_landmarks(pre, priors, VARIANCE)
    for b in range(3):
        assert torch.equal(boxes[b], decode(loc[b], priors, VARIANCE))
        assert torch.equal(points[b], decode_landm(pre[b], priors, VARIANCE))


# ---------------------------------------------------------------- nms

def clustered_boxes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes jittered around a few centres (heavy overlap), scores rounded so that many are exactly tied."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 500, (max(1, count // 25), 2))
    c = centres[rng.integers(0, len(centres), count)] + rng.normal(0, 5, (count, 2))
    wh = rng.uniform(15, 60, (count, 1)) * np.array([[1.0, 1.25]]) + rng.normal(0, 3, (count, 2))
    boxes = np.hstack([c - wh / 2, c + wh / 2]).astype(np.float32)
    boxes[rng.random(count) < 0.02] = boxes[0]  # some exact duplicates
    scores = np.round(rng.uniform(0.9, 1.0, count), 2).astype(np.float32)
    return boxes, scores


@pytest.mark.parametrize("count", [2, 3, 10, 57, 300, 1000, 3000])
@pytest.mark.parametrize("threshold", [0.4, 0.3, 0.7])
def test_nms_equal_to_py_cpu_nms(count, threshold):
    boxes, scores = clustered_boxes(count, seed=count)
    dets = np.hstack((boxes, scores[:, None])).astype(np.float32)
    expected = np.array(py_cpu_nms(dets, threshold), dtype=np.int64)
    ours = nms(boxes, scores, threshold)
    assert 0 < len(expected) < count or count <= 3
    np.testing.assert_array_equal(ours, expected)


def test_nms_degenerate_boxes_equal_to_py_cpu_nms():
    rng = np.random.default_rng(3)
    boxes = rng.integers(0, 20, (400, 4)).astype(np.float32)  # many inverted / zero-area / -1-width boxes
    boxes[:50, 2] = boxes[:50, 0] - 1  # "+1" area exactly 0
    scores = rng.integers(0, 5, 400).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.array(py_cpu_nms(np.hstack((boxes, scores[:, None])), 0.4), dtype=np.int64)
        ours = nms(boxes, scores, 0.4)
    np.testing.assert_array_equal(ours, expected)


def test_nms_long_suppression_chain_equal_to_py_cpu_nms():
    x = np.arange(1500, dtype=np.float32) * 3  # each box overlaps the next one strongly, the one after less
    boxes = np.stack([x, np.zeros_like(x), x + 20, np.full_like(x, 20)], axis=1)
    scores = np.linspace(1.0, 0.5, len(x)).astype(np.float32)
    expected = np.array(py_cpu_nms(np.hstack((boxes, scores[:, None])), 0.4), dtype=np.int64)
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), expected)


def test_nms_empty():
    assert nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.4).shape == (0,)


# ---------------------------------------------------------------- whole post-processing vs RetinaFaceDetection.forward

class FixedHeads(nn.Module):
    """Stands in for RetinaFace: returns seeded raw (loc, softmaxed conf, landmarks) sized for the input it gets."""

    def __init__(self, positive_fraction: float, seed: int):
        super().__init__()
        self.positive_fraction, self.seed = positive_fraction, seed
        self.seen_size: tuple[int, int] | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, img: torch.Tensor):
        height, width = img.shape[2:]
        count = PriorBox(R50_MODELS, image_size=(height, width)).forward().shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        loc = torch.randn(1, count, 4, generator=gen) * 0.5
        landmarks = torch.randn(1, count, 10, generator=gen) * 0.5
        positive = torch.rand(1, count, generator=gen) < self.positive_fraction
        logit = torch.where(positive, 1.5 + 7.5 * torch.rand(1, count, generator=gen),
                            torch.randn(1, count, generator=gen) - 2.0)
        conf = torch.softmax(torch.stack([torch.zeros_like(logit), logit], dim=-1), dim=-1)
        self.seen_size, self.outputs = (height, width), (loc, conf, landmarks)
        return loc, conf, landmarks


@pytest.fixture(scope="module")
def reference_detector(tmp_path_factory, r50_detector_dir) -> RetinaFaceDetection:
    """ModelScope's RetinaFaceDetection built from a folder with the R50 configuration and the session's synthetic
    R50 weights (hard-linked; any R50 weights do: each test replaces the network by fixed heads)."""
    folder = tmp_path_factory.mktemp("reference_r50")
    (folder / "configuration.json").write_text(json.dumps({"framework": "pytorch", "models": R50_MODELS}))
    link_or_copy(r50_detector_dir / "pytorch_model.pt", folder / "pytorch_model.pt")
    return RetinaFaceDetection(str(folder / "pytorch_model.pt"), device="cpu")


def run_both(detector: RetinaFaceDetection, height: int, width: int, fraction: float, seed: int):
    heads = FixedHeads(fraction, seed)
    detector.net = heads
    image = np.random.default_rng(seed).uniform(0, 255, (height, width, 3)).astype(np.float32)
    with torch.no_grad():
        ref_dets, ref_landmarks = detector.forward({"img": torch.from_numpy(image)})
    net_height, net_width = heads.seen_size
    ss = 1000.0 / max(height, width) if max(height, width) > 1500 else 1.0  # the reference's resize factor
    loc, conf, landmarks = heads.outputs
    ours = postprocess_detections(
        loc[0], conf[0], landmarks[0], prior_boxes(net_height, net_width, R50_MODELS["min_sizes"], R50_MODELS["steps"]),
        variances=VARIANCE, image_width=net_width, image_height=net_height, scale=ss,
    )
    return ours, ref_dets, ref_landmarks, ss, (net_height, net_width)


@pytest.mark.parametrize("height,width,fraction", [(480, 640, 0.03), (333, 517, 0.05), (1000, 750, 0.02)])
def test_postprocess_equal_to_reference_forward(reference_detector, height, width, fraction):
    ours, ref_dets, ref_landmarks, ss, net_size = run_both(reference_detector, height, width, fraction, seed=height)
    assert ss == 1.0 and net_size == (height, width)
    assert len(ours) == len(ref_dets) > 50
    for array in (ours.boxes, ours.scores, ours.landmarks):
        assert array.dtype == np.float32
    np.testing.assert_allclose(ours.boxes, ref_dets[:, :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours.landmarks, ref_landmarks, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(ours.scores, ref_dets[:, 4])
    assert np.all(np.diff(ours.scores) <= 0)


def test_postprocess_large_image_resized_like_reference(reference_detector):
    """1800x1200 is resized by 1000/1800; the reference divides its score column by that factor too (quirk)."""
    ours, ref_dets, ref_landmarks, ss, net_size = run_both(reference_detector, 1200, 1800, 0.3, seed=5)
    assert ss == pytest.approx(1000 / 1800) and net_size == (667, 1000)
    assert len(ours) == len(ref_dets) == 750  # keep_top_k reached (and top_k=5000 cut the ~8000 candidates)
    np.testing.assert_allclose(ours.boxes, ref_dets[:, :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours.landmarks, ref_landmarks, rtol=0, atol=1e-3)
    assert ref_dets[:, 4].max() > 1.0  # the quirk we do not copy
    np.testing.assert_allclose(ours.scores, ref_dets[:, 4] * np.float32(ss), rtol=1e-6, atol=0)
    assert ours.scores.max() <= 1.0


def test_postprocess_no_detection(reference_detector):
    ours, ref_dets, ref_landmarks, _, _ = run_both(reference_detector, 64, 96, 0.0, seed=1)
    assert len(ours) == len(ref_dets) == 0
    assert ours.boxes.shape == (0, 4) and ours.landmarks.shape == (0, 10)


def test_postprocess_accepts_batch_of_one_and_rejects_other_shapes():
    priors = prior_boxes(32, 32, R50_MODELS["min_sizes"], R50_MODELS["steps"])
    n = len(priors)
    conf = torch.tensor([[0.0, 1.0]]).repeat(n, 1)
    one = postprocess_detections(torch.zeros(n, 4), conf, torch.zeros(n, 10), priors,
                                 variances=VARIANCE, image_width=32, image_height=32)
    batched = postprocess_detections(torch.zeros(1, n, 4), conf[None], torch.zeros(1, n, 10), priors,
                                     variances=VARIANCE, image_width=32, image_height=32)
    np.testing.assert_array_equal(one.boxes, batched.boxes)
    with pytest.raises(ValueError, match="loc"):
        postprocess_detections(torch.zeros(2, n, 4), conf, torch.zeros(n, 10), priors,
                               variances=VARIANCE, image_width=32, image_height=32)
