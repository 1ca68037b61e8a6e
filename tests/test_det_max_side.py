"""The opt-in ``det_max_side`` option: detection on a copy whose longer side is at most N px, results in original
pixels, crops aligned from the original image. Small recognizer + the REAL mobilenet0.25 detector, real portraits.

Shift bounds are relative to the face's box width (the default detection's). Measured on the six portraits and their
x3 upscales (2026-11-30, mobilenet0.25), against the default detection (same image, or the original's x3): largest
box shift 0.091 of the face width (impostor_2 x3; all others <= 0.046), largest landmark shift 0.043 (person_a_2 x3).
The bounds are those maxima times about 1.5 (0.14 and 0.065). Run with ``-s`` to print the measured values.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.modelscope_adapters.configuration import read_configuration
from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.faces.detector import DetectionSettings, check_det_max_side, network_input_size, resize_factor
from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline
from modelscope_facemask.modelscope_adapters.preprocessor import FaceMaskPreprocessor

from .fixture_data import linked_copy

#: largest box / landmark shift allowed against the default detection, as a fraction of the face's box width
#: (measured maxima and margin in the module docstring)
MAX_BOX_SHIFT = 0.14
MAX_LANDMARK_SHIFT = 0.065
BAD_VALUES = [0, 31, -640, 640.0, "640", True, False, [640]]


@pytest.fixture(scope="module")
def default_prep(small_model_dir: Path) -> FaceMaskPreprocessor:
    return FaceMaskPreprocessor(str(small_model_dir), device="cpu", max_faces=None)


@pytest.fixture(scope="module")
def prep_640(small_model_dir: Path) -> FaceMaskPreprocessor:
    return FaceMaskPreprocessor(str(small_model_dir), device="cpu", max_faces=None, det_max_side=640)


@pytest.fixture(scope="module")
def images(portraits) -> dict[str, np.ndarray]:
    """BGR arrays, as ``cv2.imread`` gives them (what the preprocessor expects of an array input)."""
    return {name: cv2.imread(str(path)) for name, path in portraits.items()}


def relative_shift(reference, other) -> tuple[float, float]:
    """Largest |box difference| and |landmark difference| over the reference faces' box widths (same face order)."""
    width = (reference.boxes[:, 2] - reference.boxes[:, 0])[:, None]
    return (round(float((np.abs(reference.boxes - other.boxes) / width).max()), 4),
            round(float((np.abs(reference.landmarks - other.landmarks) / width).max()), 4))


def within_bounds(shift: tuple[float, float]) -> bool:
    return shift[0] <= MAX_BOX_SHIFT and shift[1] <= MAX_LANDMARK_SHIFT


def assert_in_image(dets, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    for points in (dets.boxes.reshape(-1, 2), dets.landmarks.reshape(-1, 2)):
        assert np.all(points[:, 0] > -0.05 * width) and np.all(points[:, 0] < 1.05 * width)
        assert np.all(points[:, 1] > -0.05 * height) and np.all(points[:, 1] < 1.05 * height)


def test_resize_factor_rule() -> None:
    settings = DetectionSettings(det_max_side=640)
    assert resize_factor(900, 700, settings) == 640 / 900
    assert network_input_size(900, 700, settings) == (640, round(700 * 640 / 900))
    assert resize_factor(640, 300, settings) == 1.0 and resize_factor(244, 204, settings) == 1.0  # never upscaled
    assert resize_factor(1400, 900, DetectionSettings()) == 1.0  # default rule unchanged
    assert resize_factor(3000, 900, DetectionSettings()) == 1000 / 3000
    assert resize_factor(3000, 900, DetectionSettings(det_max_side=2000)) == 2000 / 3000


def test_none_is_bit_identical_to_default(small_model_dir: Path, default_prep, images) -> None:
    explicit = FaceMaskPreprocessor(str(small_model_dir), device="cpu", max_faces=None, det_max_side=None)
    assert explicit.detector.settings == default_prep.detector.settings == DetectionSettings()
    big = cv2.resize(images["person_b_1"], None, fx=2, fy=2)  # > 1500 px: the reference's resize path
    inputs = [*images.values(), big]
    for a, b in zip(default_prep.prepare(inputs), explicit.prepare(inputs)):
        for name in ("boxes", "scores", "landmarks"):
            assert np.array_equal(getattr(a.detections, name), getattr(b.detections, name))
        assert np.array_equal(a.crops, b.crops)


def test_640_on_portraits(default_prep, prep_640, images) -> None:
    shifts = {}
    names = list(images)
    for name, a, b in zip(names, default_prep.prepare(list(images.values())), prep_640.prepare(list(images.values()))):
        image = images[name]
        da, db = a.detections, b.detections
        assert len(da) == len(db) >= 1, name
        if max(image.shape[:2]) <= 640:  # not resized: identical results
            for field in ("boxes", "scores", "landmarks"):
                assert np.array_equal(getattr(da, field), getattr(db, field)), name
            assert np.array_equal(a.crops, b.crops)
            continue
        assert_in_image(db, image)
        assert np.all((db.scores >= 0.9) & (db.scores <= 1.0)), name  # true probabilities, not divided by ss
        shifts[name] = relative_shift(da, db)
        assert within_bounds(shifts[name]), (name, shifts[name])
    print("relative (box, landmark) shift, 640 vs default:", shifts)
    assert any(max(img.shape[:2]) <= 640 for img in images.values())  # the identical-result branch ran
    assert shifts  # and the resized branch too


def test_upscaled_portraits_map_back(default_prep, prep_640, images) -> None:
    shifts = {}
    for name, image in images.items():
        big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        small_default = default_prep.prepare([image])[0].detections
        big_default = default_prep.prepare([big])[0].detections
        big_640 = prep_640.prepare([big])[0]
        d = big_640.detections
        assert len(d) == len(big_default) == len(small_default) >= 1, name
        assert_in_image(d, big)
        assert np.all((d.scores >= 0.9) & (d.scores <= 1.0)), name
        assert big_640.crops.shape == (len(d), 112, 112, 3)
        # against the default detection on the same big image, and the small original's detections x3
        x3 = type(small_default)(small_default.boxes * 3, small_default.scores, small_default.landmarks * 3)
        shifts[name] = (relative_shift(big_default, d), relative_shift(x3, d))
        assert within_bounds(shifts[name][0]) and within_bounds(shifts[name][1]), (name, shifts[name])
    print("relative (box, landmark) shift x3, 640 vs default on x3, vs original x3:", shifts)


def test_crops_come_from_the_original_image(prep_640, images) -> None:
    """Crops are warped from the full-resolution image with the mapped-back landmarks, not from the downsized copy."""
    from modelscope_facemask.faces.align import warp_faces

    image_bgr = images["person_b_1"]
    prepared = prep_640.prepare([image_bgr])[0]
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    expected = warp_faces(rgb, prepared.detections.landmarks.astype(np.float64))
    assert np.array_equal(prepared.crops, expected)
    ss = 640 / max(rgb.shape[:2])
    copy = cv2.resize(rgb, None, fx=ss, fy=ss)  # what detection saw: aligning from it would differ
    assert not np.array_equal(prepared.crops, warp_faces(copy, prepared.detections.landmarks.astype(np.float64) * ss))


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_values_refused_by_check_and_keyword(value, small_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="det_max_side"):
        check_det_max_side(value)
    with pytest.raises(ConfigurationError, match="det_max_side"):
        FaceMaskPreprocessor(str(small_model_dir), device="cpu", det_max_side=value)
    with pytest.raises(ConfigurationError, match="det_max_side"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", det_max_side=value)


def test_valid_values_accepted() -> None:
    assert check_det_max_side(None) is None
    assert check_det_max_side(32) == 32 and check_det_max_side(np.int64(640)) == 640


def _model_copy(small_model_dir: Path, tmp_path: Path, det_max_side) -> Path:
    folder = linked_copy(small_model_dir, tmp_path / "model")  # weights hard-linked, configuration.json copied
    config_path = folder / "configuration.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.setdefault("preprocessor", {})["det_max_side"] = det_max_side
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize("value", [0, 31, 640.0, "640", True, [640]])
def test_bad_configuration_value_names_the_file(value, small_model_dir: Path, tmp_path: Path) -> None:
    folder = _model_copy(small_model_dir, tmp_path, value)
    with pytest.raises(ConfigurationError, match=r"configuration\.json.*preprocessor\.det_max_side"):
        read_configuration(folder)
    with pytest.raises(ConfigurationError, match=r"preprocessor\.det_max_side"):
        FaceMaskPreprocessor(str(folder), device="cpu")


def test_configuration_value_used_and_keyword_overrides(small_model_dir: Path, tmp_path: Path) -> None:
    folder = _model_copy(small_model_dir, tmp_path, 640)
    assert FaceMaskPreprocessor(str(folder), device="cpu").detector.settings.det_max_side == 640
    assert FaceMaskPreprocessor(str(folder), device="cpu", det_max_side=800).detector.settings.det_max_side == 800
    pipe = FaceMaskPipeline(str(small_model_dir), device="cpu", det_max_side=640)
    assert pipe.preprocessor.detector.settings.det_max_side == 640


def test_cli_flag(small_model_dir: Path, portraits, capsys) -> None:
    from modelscope_facemask.cli import common

    parser = __import__("argparse").ArgumentParser()
    common.add_model_options(parser)
    args = parser.parse_args(["--model", str(small_model_dir), "--device", "cpu", "--det-max-side", "640"])
    assert common.open_preprocessor(args).detector.settings.det_max_side == 640
    assert common.open_pipeline(args).preprocessor.detector.settings.det_max_side == 640
    photo = str(portraits["person_b_1"])
    for bad in ("0", "31", "abc", "640.5"):
        assert main(["embed", photo, "--model", str(small_model_dir), "--device", "cpu", "--det-max-side", bad]) == 2
        assert "det" in capsys.readouterr().err
