"""FaceDetector end to end against ModelScope's ``RetinaFaceDetection.forward`` itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from modelscope.models.cv.face_detection.retinaface.detection import RetinaFaceDetection
from PIL import Image

from modelscope_facemask.model_files.checkpoints import load_weights
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RetinaFace
from modelscope_facemask.tools.demo.synthetic_weights import smooth_images

from .reference_retinaface import build_reference_retinaface


def reference_detect(det: RetinaFaceDetection, image: np.ndarray):
    """The reference's (dets, landmarks) for the float image it is fed (RGB in the ModelScope flow)."""
    dets, landms = det.forward({"img": torch.from_numpy(image.astype(np.float32))})
    return dets, landms


def assert_same_detections(ours, dets, landms, ss: float = 1.0):
    assert len(ours) == len(dets) > 0
    np.testing.assert_allclose(ours.boxes, dets[:, :4], atol=1e-3, rtol=0)
    np.testing.assert_allclose(ours.landmarks, landms, atol=1e-3, rtol=0)
    # the reference divides its score column by the resize factor too; ours are true scores
    np.testing.assert_allclose(ours.scores, dets[:, 4] * ss, atol=1e-6, rtol=0)
    assert np.all(ours.scores <= 1.0) and np.all(np.diff(ours.scores) <= 0)


@pytest.fixture(scope="module")
def r50_pair(r50_detector_dir):
    ref = RetinaFaceDetection(str(r50_detector_dir / "pytorch_model.pt"), device="cpu")
    return FaceDetector.from_pretrained(r50_detector_dir), ref


@pytest.mark.parametrize("size", [(480, 640), (1800, 1200)])
def test_r50_matches_reference_forward(r50_pair, size):
    ours, ref = r50_pair
    image = smooth_images(1, *size, seed=31)[0]
    dets, landms = reference_detect(ref, image)
    ss = 1000.0 / max(size) if max(size) > 1500 else 1.0
    if ss != 1.0:
        assert dets[:, 4].max() > 1.0  # the reference quirk this package deliberately does not copy
    assert_same_detections(ours.detect([image])[0], dets, landms, ss)


def test_batch_of_mixed_sizes_equals_single_calls(r50_pair, monkeypatch):
    ours, _ = r50_pair
    monkeypatch.setattr(ours, "batch_size", 8)  # the CUDA default; the CPU default runs one image at a time
    images = [smooth_images(1, h, w, seed=40 + i)[0] for i, (h, w) in enumerate([(240, 320), (300, 300), (240, 320)])]
    batched = ours.detect(images)
    for image, got in zip(images, batched):
        single = ours.detect([image])[0]
        assert len(got) == len(single) > 0
        # a batched convolution may sum in another order: equal up to float rounding
        np.testing.assert_allclose(got.boxes, single.boxes, atol=1e-3, rtol=0)
        np.testing.assert_allclose(got.scores, single.scores, atol=1e-5, rtol=0)


def test_mobilenet_real_weights_match_reference_parts(mobilenet_detector_dir, mobilenet_state, portraits):
    ref = RetinaFaceDetection.__new__(RetinaFaceDetection)  # the reference forward with the mobilenet assembly
    torch.nn.Module.__init__(ref)
    ref.cfg = MOBILENET025_CONFIG.to_dict()
    ref.device = "cpu"
    ref.net = build_reference_retinaface(ref.cfg)
    ref.net.load_state_dict(mobilenet_state, strict=True)
    ref.net.eval()
    ours = FaceDetector(load_weights(RetinaFace(MOBILENET025_CONFIG), mobilenet_state))
    for name in ("person_a_1", "impostor_1"):
        rgb = np.asarray(Image.open(portraits[name]).convert("RGB"))
        dets, landms = reference_detect(ref, rgb[:, :, ::-1])  # biubug6 weights are fed BGR
        assert_same_detections(ours.detect([rgb])[0], dets, landms)
