"""The GPU path's functions, run on the CPU: batched torch post-processing (equal to the numpy path), padded
mixed-size detection batches, batched torch alignment, decode-ahead. Independent references: the numpy path
(itself tested against ModelScope's code), OpenCV ``warpAffine``, scikit-image's ``SimilarityTransform``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform

from modelscope_facemask.model_files.checkpoints import load_weights
from modelscope_facemask.faces.align import ARCFACE_TEMPLATE, warp_faces
from modelscope_facemask.faces.anchors import prior_boxes
from modelscope_facemask.faces.batched_postprocess import (
    PostprocessSettings, device_prior_boxes, nms_rows, postprocess_batch, valid_anchor_index)
from modelscope_facemask.faces.detector import DetectionSettings, FaceDetector, network_planes
from modelscope_facemask.faces.gpu_align import similarity_transforms, warp_image_faces
from modelscope_facemask.faces.images import load_image
from modelscope_facemask.faces.padded_batches import bucket_sizes
from modelscope_facemask.faces.postprocess import nms, postprocess_detections
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RetinaFace

from .fixture_data import PORTRAIT_NAMES as PORTRAITS

VARIANCE = MOBILENET025_CONFIG.variance


@pytest.fixture(scope="module")
def net(mobilenet_state):
    return load_weights(RetinaFace(MOBILENET025_CONFIG), mobilenet_state).eval()


@pytest.fixture(scope="module")
def images(portraits):
    return [load_image(portraits[name]) for name in PORTRAITS]


@pytest.fixture(scope="module")
def raw_outputs(net, images):
    """Each portrait's real network outputs at its own size."""
    out = []
    for image in images:
        planes, ss = network_planes(image, DetectionSettings(), MOBILENET025_CONFIG.channel_order)
        with torch.inference_mode():
            loc, conf, landmarks = net(torch.from_numpy(planes[None]))
        out.append((loc, conf, landmarks, planes.shape[1], planes.shape[2], ss))
    return out


def assert_same(expected, actual, atol=1e-5):
    """Same faces, same order; values equal up to ``atol`` (post-processing alone: bit-identical on one device)."""
    assert len(actual) == len(expected)
    for name in ("boxes", "scores", "landmarks"):
        np.testing.assert_allclose(getattr(actual, name), getattr(expected, name), rtol=0, atol=atol)


#: px (and score) tolerance when the network runs at another batch size or padded shape: convolution kernels then
#: round differently (measured: 1 float32 ulp of a coordinate, 1.5e-5 px at x = 212)
NETWORK_ROUNDING = 1e-3


# ---------------------------------------------------------------- batched post-processing

@pytest.mark.parametrize("threshold", [0.9, 0.02])
def test_batched_postprocess_equals_numpy_path_on_real_outputs(raw_outputs, threshold):
    settings = PostprocessSettings(confidence_threshold=threshold)
    total = 0
    for loc, conf, landmarks, height, width, ss in raw_outputs:
        priors = prior_boxes(height, width, MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps)
        expected = postprocess_detections(loc[0], conf[0], landmarks[0], priors, variances=VARIANCE,
                                          image_width=width, image_height=height, scale=ss,
                                          confidence_threshold=threshold)
        actual = postprocess_batch(loc, conf, landmarks, priors, variances=VARIANCE, image_width=width,
                                   image_height=height, scales=[ss], settings=settings)[0]
        assert_same(expected, actual)
        for name in ("boxes", "scores", "landmarks"):  # on the same device: bit for bit
            assert np.array_equal(getattr(actual, name), getattr(expected, name))
        total += len(expected)
    assert total >= 6  # at least the six faces (more at the low threshold)


def tied_outputs(batch: int, anchors: int, seed: int):
    """Raw outputs whose scores are heavily tied (rounded to 3 values above the threshold) and whose boxes overlap."""
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, anchors, 4, generator=gen) * 0.1
    landmarks = torch.randn(batch, anchors, 10, generator=gen)
    levels = torch.tensor([0.5, 0.95, 0.97, 1.0])
    face = levels[torch.randint(0, 4, (batch, anchors), generator=gen)]
    conf = torch.stack((1 - face, face), dim=-1)
    return loc, conf, landmarks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_postprocess_equals_numpy_path_with_tied_scores(seed):
    height, width = 64, 96
    priors = prior_boxes(height, width, MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps)
    loc, conf, landmarks = tied_outputs(3, len(priors), seed)
    scales = [1.0, 0.5, 0.75]
    for settings in (PostprocessSettings(), PostprocessSettings(top_k=20, keep_top_k=5, nms_threshold=0.3)):
        actual = postprocess_batch(loc, conf, landmarks, priors, variances=VARIANCE, image_width=width,
                                   image_height=height, scales=scales, settings=settings)
        for row in range(3):
            expected = postprocess_detections(
                loc[row], conf[row], landmarks[row], priors, variances=VARIANCE, image_width=width,
                image_height=height, scale=scales[row], confidence_threshold=settings.confidence_threshold,
                top_k=settings.top_k, nms_threshold=settings.nms_threshold, keep_top_k=settings.keep_top_k)
            assert len(expected) > 1
            assert_same(expected, actual[row])


def test_nms_rows_equals_numpy_nms_and_keeps_images_apart():
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 200, (40, 2))
    size = rng.uniform(20, 60, (40, 1))
    boxes = np.hstack([centres - size / 2, centres + size / 2]).astype(np.float32)
    scores = np.round(rng.uniform(0.9, 1.0, 40), 2).astype(np.float32)  # ties
    expected_order = scores.argsort()[::-1]
    expected = nms(boxes, scores, 0.4)
    kept = nms_rows(torch.from_numpy(boxes[expected_order]), torch.zeros(40, dtype=torch.int64), 0.4)
    assert expected_order[kept.numpy()].tolist() == expected.tolist()
    # the same boxes as two images: each keeps its own set, none suppresses the other's
    both = torch.from_numpy(np.concatenate([boxes[expected_order]] * 2))
    kept_both = nms_rows(both, torch.repeat_interleave(torch.arange(2), 40), 0.4).numpy()
    assert kept_both.tolist() == kept.tolist() + (kept + 40).tolist()


def test_nms_rows_threshold_boundary_like_numpy():
    """IoU exactly at the threshold survives (``iou <= threshold``), in float32, as in py_cpu_nms."""
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 3], [0, 0, 9, 4]], np.float32)  # IoUs 0.4 and 0.5 with the first
    scores = np.array([0.99, 0.98, 0.97], np.float32)
    expected = nms(boxes, scores, 0.4)
    kept = nms_rows(torch.from_numpy(boxes), torch.zeros(3, dtype=torch.int64), 0.4)
    assert kept.tolist() == expected.tolist() == [0, 1]


def test_device_prior_boxes_are_cached_and_equal():
    first = device_prior_boxes(96, 64, MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps, False, "cpu")
    assert first is device_prior_boxes(96, 64, MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps, False, "cpu")
    assert torch.equal(first, prior_boxes(96, 64, MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps))


def test_detector_batched_postprocess_equals_default(net, images):
    default = FaceDetector(net).detect(images)
    batched = FaceDetector(net, settings=DetectionSettings(batched_postprocess=True)).detect(images)
    assert not FaceDetector(net).uses_batched_postprocess  # CPU default: the numpy path
    for expected, actual in zip(default, batched):
        assert_same(expected, actual)


# ---------------------------------------------------------------- padded mixed-size batches

def test_valid_anchor_index_maps_to_the_same_anchor_pixels():
    min_sizes, steps = MOBILENET025_CONFIG.min_sizes, MOBILENET025_CONFIG.steps
    for (h, w), (ph, pw) in [((50, 70), (64, 96)), ((64, 96), (64, 96)), ((33, 17), (160, 32))]:
        index = valid_anchor_index(h, w, ph, pw, min_sizes, steps)
        own = prior_boxes(h, w, min_sizes, steps).numpy() * np.array([w, h, w, h], np.float64)
        padded = prior_boxes(ph, pw, min_sizes, steps).numpy()[index] * np.array([pw, ph, pw, ph], np.float64)
        np.testing.assert_allclose(padded, own, rtol=0, atol=1e-3)


def test_bucket_sizes_groups_and_keeps_exact_sizes():
    sizes = [(899, 722), (900, 716), (244, 204), (900, 689), (785, 682), (244, 204)]
    buckets = bucket_sizes(sizes)
    assert sorted(i for _, members in buckets for i in members) == list(range(6))
    for shape, members in buckets:
        assert all(sizes[i][0] <= shape[0] and sizes[i][1] <= shape[1] for i in members)
    assert ((244, 204), [2, 5]) in buckets  # equal sizes: no padding
    # 785x682 pads to 800x704, which fills 928x736 to 0.82 >= MIN_FILL (0.8): it joins the large bucket
    assert ((928, 736), [0, 1, 3, 4]) in buckets
    assert bucket_sizes([(785, 682), (900, 716)], min_fill=0.9) == [((900, 716), [1]), ((785, 682), [0])]  # alone: own size


def test_padded_batches_equal_unpadded_on_real_portraits(net, images):
    """Faces away from the right/bottom border come out the same (measured: bit-identical on these six)."""
    default = FaceDetector(net).detect(images)
    for batched in (False, True):
        padded = FaceDetector(net, settings=DetectionSettings(pad_batches=True, batched_postprocess=batched))
        for expected, actual in zip(default, padded.detect(images)):
            assert_same(expected, actual, NETWORK_ROUNDING)


def test_padded_batches_faces_at_the_border_move_little(net, images):
    """Faces cut 8 px from the right/bottom edge: the border effect of padding (measured max 4.6 px box, 2.3 px
    landmarks, score 3e-4; documented in docs/cpu-and-gpu.md)."""
    default = FaceDetector(net, settings=DetectionSettings(confidence_threshold=0.5))
    found = default.detect(images)
    cut = [im[: int(d.boxes[0, 3]) + 8, : int(d.boxes[0, 2]) + 8].copy() for im, d in zip(images, found)]
    expected = default.detect(cut)
    actual = FaceDetector(net, settings=DetectionSettings(confidence_threshold=0.5, pad_batches=True)).detect(cut)
    for e, a in zip(expected, actual):
        assert len(e) == len(a) == 1
        assert np.abs(e.boxes - a.boxes).max() < 8 and np.abs(e.landmarks - a.landmarks).max() < 4
        assert np.abs(e.scores - a.scores).max() < 1e-2


def test_padded_batches_survive_out_of_memory_split(net, images, monkeypatch):
    detector = FaceDetector(net, settings=DetectionSettings(pad_batches=True))
    expected = detector.detect(images)
    original = detector._raw_outputs_nchw

    def small_device(batch):
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(batch)

    monkeypatch.setattr(detector, "_raw_outputs_nchw", small_device)
    for e, a in zip(expected, detector.detect(images)):
        assert_same(e, a, NETWORK_ROUNDING)


# ---------------------------------------------------------------- batched alignment

def test_similarity_transforms_equal_scikit_image():
    rng = np.random.default_rng(3)
    points = ARCFACE_TEMPLATE[None] * rng.uniform(0.5, 3, (20, 1, 1)) + rng.normal(0, 4, (20, 5, 2)) \
        + rng.uniform(0, 500, (20, 1, 2))
    collinear = np.stack([np.linspace(0, 40, 5), np.linspace(10, 30, 5)], axis=1)[None]
    mirrored = (ARCFACE_TEMPLATE * np.array([-1, 1]))[None]
    points = np.concatenate([points, collinear, mirrored])
    ours = similarity_transforms(torch.from_numpy(points), torch.from_numpy(ARCFACE_TEMPLATE.copy())).numpy()
    for face, matrix in zip(points, ours):
        expected = SimilarityTransform()
        expected.estimate(face, ARCFACE_TEMPLATE.astype(np.float64))
        np.testing.assert_allclose(matrix, expected.params, rtol=1e-9, atol=1e-9)
    coincident = similarity_transforms(torch.ones(1, 5, 2, dtype=torch.float64), torch.from_numpy(ARCFACE_TEMPLATE.copy()))
    assert torch.isnan(coincident).all()


def test_torch_alignment_close_to_opencv_on_real_faces(net, images):
    detections = FaceDetector(net, settings=DetectionSettings(confidence_threshold=0.02)).detect(images)
    landmarks = [d.landmarks.astype(np.float64) for d in detections]
    expected = np.concatenate([warp_faces(im, lm) for im, lm in zip(images, landmarks)])
    actual = np.concatenate(warp_image_faces(images, landmarks, device="cpu"))
    assert expected.shape == actual.shape and len(expected) >= 6
    diff = np.abs(expected.astype(int) - actual.astype(int))
    # OpenCV samples at 1/32 px with 15-bit weights: measured max 1 grey level on 0.01 % of the values
    assert diff.max() <= 2 and diff.mean() < 0.01


def test_torch_alignment_handles_faces_over_the_border_and_no_faces():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    landmarks = (ARCFACE_TEMPLATE * 0.8 + np.array([-20, 10])).reshape(1, 10).astype(np.float64)  # half outside
    expected = warp_faces(image, landmarks)
    crops = warp_image_faces([image, image], [landmarks, np.zeros((0, 10))])
    assert crops[1].shape == (0, 112, 112, 3)
    assert np.abs(expected.astype(int) - crops[0].astype(int)).max() <= 2
    assert (crops[0] == 0).mean() > 0.3  # outside the image is black, as with warpAffine


# ---------------------------------------------------------------- decode ahead

def test_chunks_ahead_loads_in_order_one_chunk_ahead_and_keeps_errors_per_item():
    import threading

    from modelscope_facemask.faces.decode_ahead import chunks_ahead

    started: list[int] = []
    consumed: list[int] = []
    lock = threading.Lock()

    def load(item):
        with lock:
            started.append(item)
            # never more than one chunk (of 3) ahead of what the caller has consumed
            assert item < len(consumed) + 6
        if item == 4:
            raise ValueError("bad item 4")
        return item * 10

    seen = []
    for chunk, loaded in chunks_ahead(list(range(8)), 3, load):
        seen.append(chunk)
        for item, value in zip(chunk, loaded):
            if item == 4:
                assert isinstance(value, ValueError)
            else:
                assert value == item * 10
        consumed.extend(chunk)
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert sorted(started) == list(range(8))
    assert list(chunks_ahead([], 3, load)) == []
