"""Alignment against scikit-image's SimilarityTransform and ModelScope's align_face."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from modelscope.models.cv.face_recognition.align_face import align_face

from modelscope_facemask.faces.align import (
    ARCFACE_TEMPLATE, alignment_error, arcface_template, similarity_transform, warp_face, warp_faces,
)

INSIGHTFACE_ARCFACE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
)


def skimage_params(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `estimate` is deprecated in 0.26; align_face still uses it
        tform = SimilarityTransform()
        tform.estimate(src, dst)
    return tform.params


def reference_align(image: np.ndarray, landmarks: np.ndarray, size=(112, 112)) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return align_face(image, size, landmarks)[0]


def face_like_landmarks(rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """The template scaled, rotated, shifted and jittered: what a detector reports for a real face."""
    angle = rng.uniform(-0.8, 0.8)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE - 56) @ rotation.T * rng.uniform(0.3, 4.0) + rng.uniform(50, 350, 2)
    return (points + rng.normal(0, 2, (5, 2))).astype(dtype)


def test_template_equals_align_face_construction():
    base = np.array([30.2946, 51.6963, 65.5318, 51.5014, 48.0252, 71.7366, 33.5493, 92.3655, 62.7299, 92.2041])
    expected = base.reshape((5, 2)).astype(np.float32)
    expected[:, 0] += (112 - 96) / 2
    assert ARCFACE_TEMPLATE.dtype == np.float32 and ARCFACE_TEMPLATE.shape == (5, 2)
    np.testing.assert_array_equal(ARCFACE_TEMPLATE, expected)
    np.testing.assert_allclose(ARCFACE_TEMPLATE, INSIGHTFACE_ARCFACE, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_similarity_transform_equals_skimage_on_face_like_points(dtype):
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        src = face_like_landmarks(rng, dtype)
        difference = similarity_transform(src, ARCFACE_TEMPLATE) - skimage_params(src, ARCFACE_TEMPLATE)
        worst = max(worst, float(np.abs(difference).max()))
    assert worst <= 1e-6


def test_similarity_transform_equals_skimage_on_random_points():
    rng = np.random.default_rng(1)
    for count in (2, 3, 5, 9):
        for _ in range(30):
            src, dst = rng.normal(0, 100, (count, 2)), rng.normal(0, 100, (count, 2))
            ours = similarity_transform(src, dst)
            assert ours.shape == (3, 3) and ours.dtype == np.float64
            np.testing.assert_allclose(ours, skimage_params(src, dst), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "src",
    [
        np.array([[0, 0], [1, 1], [2, 2], [3, 3], [5, 5]], np.float64),  # collinear: rank dim - 1
        np.array([[10, 40], [20, 40], [30, 40], [40, 40], [50, 40]], np.float32),  # collinear, horizontal
        np.array([[0, 5], [0, 1], [0, 2], [0, 8], [0, 3]], np.float64),  # collinear, vertical, unordered
        np.array([[1, 2], [1, 2], [1, 2], [1, 2], [4, 6]], np.float64),  # four coincide
        np.array([[7, 7]] * 5, np.float64),  # all coincide: rank 0 -> NaN
        np.array([[3, 4]] * 5, np.int64),  # integers
    ],
)
def test_similarity_transform_degenerate_like_skimage(src):
    expected = skimage_params(src, ARCFACE_TEMPLATE)
    ours = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, equal_nan=True)


def test_warp_face_pixel_identical_to_align_face():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (480, 400, 3), dtype=np.uint8)
    for index in range(40):
        landmarks = face_like_landmarks(rng, np.float32 if index % 2 else np.float64)
        crop = warp_face(image, landmarks)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        assert np.array_equal(crop, reference_align(image, landmarks))
    landmarks = face_like_landmarks(rng)
    assert np.array_equal(warp_face(image, landmarks.reshape(10)), reference_align(image, landmarks))


def test_warp_face_other_size_and_non_contiguous_image():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)[:, :, ::-1]
    landmarks = face_like_landmarks(rng)
    assert np.array_equal(warp_face(image, landmarks, size=(128, 112)), reference_align(image, landmarks, (128, 112)))


def test_warp_faces_matches_per_face_reference():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    landmarks = np.stack([face_like_landmarks(rng) for _ in range(6)])
    expected = np.stack([reference_align(image, lm) for lm in landmarks])
    assert np.array_equal(warp_faces(image, landmarks), expected)
    assert np.array_equal(warp_faces(image, landmarks.reshape(6, 10)), expected)
    assert warp_faces(image, np.zeros((0, 5, 2), np.float32)).shape == (0, 112, 112, 3)


def test_coincident_landmarks_refused():
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="coincide"):
        warp_face(image, np.full((5, 2), 20.0, np.float32))


def test_alignment_error():
    rng = np.random.default_rng(5)
    exact = (ARCFACE_TEMPLATE - 56) * 2.5 + 200
    assert alignment_error(exact, similarity_transform(exact, ARCFACE_TEMPLATE)) < 1e-4
    noisy = face_like_landmarks(rng, np.float64)
    params = skimage_params(noisy, ARCFACE_TEMPLATE)
    mapped = noisy @ params[:2, :2].T + params[:2, 2]
    expected = np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1).mean()
    assert alignment_error(noisy, params) == pytest.approx(expected, rel=1e-9)


def test_template_for_small_size_refused():
    with pytest.raises(ValueError, match="at least"):
        arcface_template((100, 112))
