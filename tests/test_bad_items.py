"""A bad list item never sinks the list; 16-bit photos find the same face as their 8-bit version (real detector)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from PIL import Image

from modelscope_facemask.errors import FacePreparationError, ImageLoadError
from modelscope_facemask.faces import detector as detector_module
from modelscope_facemask.faces.images import load_image
from modelscope_facemask.modelscope_adapters.preprocessor import FaceMaskPreprocessor



@pytest.fixture(scope="module")
def pipe(small_model_dir):
    return pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu")


def truncated_lazy_image(folder) -> Image.Image:
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, format="PNG")
    (folder / "cut.png").write_bytes(data.getvalue()[:300])
    return Image.open(folder / "cut.png")


def bad_items(folder) -> list[tuple[object, str]]:
    """(input, a fragment its error must contain): each of these once raised out of a list call."""
    looped: dict = {}
    looped["image"] = looped
    masked = np.ma.MaskedArray(np.zeros((20, 20, 3), np.uint8), mask=np.zeros((20, 20, 3), bool))
    masked[0, 0] = np.ma.masked
    return [
        (truncated_lazy_image(folder), "truncated"),
        (str(folder / "a\x00b.jpg"), "null byte"),
        (looped, "contains itself"),
        (masked, "masked values"),
        (np.zeros((3, 3, 3), np.float64), "float64"),
        (object(), "object"),
    ]


def test_bad_items_never_sink_the_list(pipe, portraits, tmp_path):
    good = [str(portraits["person_a_1"]), str(portraits["impostor_1"])]
    bad = bad_items(tmp_path)
    items = [good[0], *[source for source, _ in bad], good[1]]
    outputs = pipe(items)
    assert len(outputs) == len(items)
    for path, output in zip(good, (outputs[0], outputs[-1])):
        single = pipe(path)
        assert "error" not in output and len(output[OutputKeys.SCORES]) == 1
        np.testing.assert_allclose(output[OutputKeys.BOXES], single[OutputKeys.BOXES], atol=1e-3)
    for (source, fragment), output in zip(bad, outputs[1:-1]):
        assert fragment in output["error"], (fragment, output["error"])
        assert output[OutputKeys.IMG_EMBEDDING].shape == (0, 512)


def test_a_single_bad_input_raises_image_load_error_chained_to_the_cause(pipe, tmp_path):
    with pytest.raises(ImageLoadError, match="truncated") as info:
        pipe(truncated_lazy_image(tmp_path))
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ImageLoadError, match="null byte") as info:
        pipe(str(tmp_path / "a\x00b.jpg"))
    assert isinstance(info.value.__cause__, ValueError)


def test_detection_failing_on_one_image_does_not_sink_the_others(pipe, portraits, monkeypatch):
    """Fault injection: the detector's input builder raises for one image (marked by its width)."""
    real = detector_module.network_planes

    def failing(image, *args, **kwargs):
        if image.shape[1] == 333:
            raise RuntimeError("injected detector fault")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(detector_module, "network_planes", failing)
    photo = load_image(portraits["person_b_1"])
    marked = np.ascontiguousarray(photo[:, :333, ::-1])
    outputs = pipe([str(portraits["person_a_1"]), marked, photo[:, :, ::-1].copy()])
    assert "injected detector fault" in outputs[1]["error"] and "FacePreparationError" not in outputs[0]
    assert [len(o[OutputKeys.SCORES]) for o in (outputs[0], outputs[2])] == [1, 1]
    with pytest.raises(FacePreparationError, match="injected") as info:
        pipe(marked)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.fixture(scope="module")
def preprocessor(mobilenet_detector_dir):
    return FaceMaskPreprocessor(detector=str(mobilenet_detector_dir), device="cpu")


@pytest.mark.parametrize("name", ["person_a_1", "impostor_2"])
def test_16_bit_gray_portrait_finds_the_face_of_its_8_bit_version(preprocessor, portraits, tmp_path, name):
    gray8 = np.asarray(Image.open(portraits[name]).convert("L"))
    noise = np.random.default_rng(0).integers(0, 256, gray8.shape)  # any low byte: only the high byte counts
    gray16 = (gray8.astype(np.uint16) * 256 + noise).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as img:
        assert img.mode.startswith("I;16")
    reference = preprocessor(gray8)
    assert len(reference["boxes"]) == 1
    for source in (str(tmp_path / "gray16.png"), gray16, Image.open(tmp_path / "gray16.png")):
        got = preprocessor(source)
        assert len(got["boxes"]) == 1
        np.testing.assert_allclose(got["boxes"], reference["boxes"], atol=1.0)
        np.testing.assert_allclose(got["keypoints"], reference["keypoints"], atol=1.0)
