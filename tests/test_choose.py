"""choose_faces against ModelScope's FaceProcessingBasePipeline._choose_face."""
from __future__ import annotations

import numpy as np
import pytest

from modelscope.pipelines.cv.face_processing_base_pipeline import FaceProcessingBasePipeline

from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.faces.choose import choose_faces
from modelscope_facemask.faces.detections import Detections


def random_detections(count: int, seed: int, tie_areas: bool = False) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 400, (count, 2)).astype(np.float64) if tie_areas else rng.uniform(0, 400, (count, 2))
    wh = rng.choice([4.0, 9.5, 10.0, 12.0, 30.0, 55.0], (count, 2)) if tie_areas else rng.uniform(2, 80, (count, 2))
    boxes = np.hstack([xy, xy + wh]).astype(np.float32)
    scores = np.sort(rng.uniform(0.9, 1.0, count)).astype(np.float32)[::-1].copy()
    landmarks = rng.uniform(0, 480, (count, 10)).astype(np.float32)
    return Detections(boxes, scores, landmarks)


def reference_choice(dets: Detections, min_face: float, top_face: int = 1):
    det_result = {"boxes": dets.boxes, "keypoints": dets.landmarks, "scores": dets.scores}
    return FaceProcessingBasePipeline._choose_face(None, det_result, min_face=min_face, top_face=top_face)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("min_size", [10, 25, 0])
def test_largest_face_equal_to_reference(seed, min_size):
    dets = random_detections(1 + seed * 3, seed, tie_areas=seed % 2 == 1)
    expected = reference_choice(dets, min_size)
    ours = choose_faces(dets, max_faces=1, min_size=min_size)
    if expected is None:
        assert len(ours) == 0
        return
    score, box, landmarks = expected
    assert len(ours) == 1
    np.testing.assert_array_equal(ours.boxes[0], box)
    np.testing.assert_array_equal(ours.landmarks[0], landmarks)
    assert ours.scores[0] == score


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_faces", [2, 3, 50])
def test_top_k_faces_by_area(seed, max_faces):
    dets = random_detections(20, seed, tie_areas=seed % 2 == 0)
    ours = choose_faces(dets, max_faces=max_faces)
    # The reference's own selection for top_face=k: filter, np.argsort(area)[-k:], main face = the last one.
    big = [i for i in range(len(dets)) if (dets.boxes[i, 2] - dets.boxes[i, 0]) >= 10
           and (dets.boxes[i, 3] - dets.boxes[i, 1]) >= 10]
    boxes = dets.boxes[big]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    expected_rows = np.array(big)[np.argsort(area)[-max_faces:][::-1]]
    np.testing.assert_array_equal(ours.boxes, dets.boxes[expected_rows])
    np.testing.assert_array_equal(ours.scores, dets.scores[expected_rows])
    assert np.all(np.diff((ours.boxes[:, 2] - ours.boxes[:, 0]) * (ours.boxes[:, 3] - ours.boxes[:, 1])) <= 0)
    _, main_box, _ = reference_choice(dets, 10, top_face=max_faces)
    np.testing.assert_array_equal(ours.boxes[0], main_box)


def test_all_faces_in_score_order():
    dets = random_detections(30, 4)
    ours = choose_faces(dets, max_faces=None)
    keep = ((dets.boxes[:, 2] - dets.boxes[:, 0]) >= 10) & ((dets.boxes[:, 3] - dets.boxes[:, 1]) >= 10)
    assert 0 < len(ours) < len(dets)
    np.testing.assert_array_equal(ours.boxes, dets.boxes[keep])
    np.testing.assert_array_equal(ours.scores, dets.scores[keep])


def test_empty_and_too_small():
    assert len(choose_faces(Detections.empty())) == 0
    tiny = Detections(np.array([[0, 0, 9.9, 40]], np.float32), np.array([0.99], np.float32),
                      np.zeros((1, 10), np.float32))
    assert reference_choice(tiny, 10) is None
    assert len(choose_faces(tiny)) == 0 and len(choose_faces(tiny, max_faces=None)) == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_invalid_max_faces(bad):
    with pytest.raises(ConfigurationError, match="max_faces"):
        choose_faces(Detections.empty(), max_faces=bad)


def test_invalid_min_size():
    with pytest.raises(ConfigurationError, match="min_size"):
        choose_faces(Detections.empty(), min_size=-1)
