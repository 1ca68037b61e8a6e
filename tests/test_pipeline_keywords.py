"""Pipeline keywords (constructor and per call) and ModelScope's stage-by-stage driving of the pipeline.

Before: ``use_det='false'`` ran detection (``bool('false')`` is True), an unknown keyword given to ``pipeline()`` was
silently ignored, per call it was a bare ``TypeError`` from an internal method, and ``preprocess``/``forward``/
``postprocess`` were never tested (driven by ModelScope they returned torch tensors instead of numpy arrays).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.pipelines.base import Pipeline
from modelscope.utils.constant import Tasks

from modelscope_facemask import FaceMaskPipeline, FaceMaskPreprocessor
from modelscope_facemask.errors import ConfigurationError, UnknownOptionError
from modelscope_facemask.faces.images import load_image

from .fixture_data import OUTPUT_KEYS as KEYS



@pytest.fixture(scope="module")
def pipe(small_model_dir):
    return pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu")


@pytest.fixture(scope="module")
def photo(portraits) -> str:
    return str(portraits["person_a_1"])


@pytest.fixture(scope="module")
def group_bgr(portraits) -> np.ndarray:
    faces = [load_image(portraits[n]) for n in ("person_a_2", "person_b_1", "impostor_2")]
    canvas = np.full((max(f.shape[0] for f in faces), sum(f.shape[1] for f in faces), 3), 200, np.uint8)
    x = 0
    for f in faces:
        canvas[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1]
    return canvas[:, :, ::-1].copy()


def _unknown_keyword_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unknown keyword argument" in r.getMessage()]


def _assert_same(a: dict, b: dict) -> None:
    assert set(KEYS) <= set(a) and set(KEYS) <= set(b)
    for key in KEYS:
        assert isinstance(a[key], np.ndarray) and a[key].dtype == np.float32, (key, type(a[key]))
        np.testing.assert_array_equal(a[key], b[key])  # NaN == NaN here (use_det=False)


# ---------------------------------------------------------------------- unknown keywords
def test_unknown_pipeline_keywords_warn_naming_them(small_model_dir, photo, caplog):
    with caplog.at_level(logging.WARNING, logger="modelscope.facemask"):
        p = pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu", max_face=None, backend="openvino")
    messages = _unknown_keyword_records(caplog)
    assert len(messages) == 2
    typo = next(m for m in messages if "'max_face'" in m)
    assert "did you mean 'max_faces'?" in typo and "ignored" in typo
    assert "'backend'" in next(m for m in messages if "'backend'" in m)
    assert len(p(photo)[OutputKeys.SCORES]) == 1  # max_face=None did not become max_faces=None


def test_keywords_modelscope_passes_are_quiet(small_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="modelscope.facemask"):
        pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu")
        pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu", model_revision="master", trust_remote_code=True,
                 auto_collate=True, compile=False, llm_framework=None, external_engine_for_llm=False)
        FaceMaskPipeline(str(small_model_dir), device="cpu", trust_remote_code=False, device_map=None, model_revision="v1")
    assert _unknown_keyword_records(caplog) == []


@pytest.mark.parametrize("call, name", [
    (lambda p, x: p(x, max_face=None), "max_face"),
    (lambda p, x: p([x], engine="openvino"), "engine"),
    (lambda p, x: Pipeline.__call__(p, x, max_face=None), "max_face"),  # ModelScope's __call__ -> _sanitize_parameters
], ids=["single", "list", "modelscope-call"])
def test_unknown_per_call_keywords_are_refused(pipe, photo, call, name):
    """Before: a bare TypeError from an internal method (run_batch), or silently ignored through ModelScope's call."""
    with pytest.raises(UnknownOptionError) as info:
        call(pipe, photo)
    message = str(info.value)
    assert f"unknown keyword argument {name!r}" in message and "options: batch_size, max_faces, use_det" in message
    assert ("did you mean 'max_faces'?" in message) == (name == "max_face")
    assert isinstance(info.value, TypeError)  # what Python raises for unknown keywords, still catchable as such


def test_extra_positional_arguments_are_refused(pipe, photo):
    with pytest.raises(UnknownOptionError, match="positional"):
        pipe(photo, None)


# ---------------------------------------------------------------------- types of known options
@pytest.mark.parametrize("value", ["false", "False", 0, 1, "no", None.__class__], ids=repr)
def test_use_det_must_be_a_boolean_everywhere(small_model_dir, pipe, photo, value):
    """``use_det='false'`` ran detection (bool('false') is True); now a ConfigurationError as in configuration.json."""
    with pytest.raises(ConfigurationError, match="use_det must be True or False"):
        pipeline(Tasks.face_recognition, str(small_model_dir), device="cpu", use_det=value)
    with pytest.raises(ConfigurationError, match="use_det must be True or False"):
        pipe(photo, use_det=value)
    with pytest.raises(ConfigurationError, match="use_det must be True or False"):
        pipe([photo], use_det=value)
    with pytest.raises(ConfigurationError, match="use_det must be True or False"):
        FaceMaskPreprocessor(str(small_model_dir), device="cpu", use_det=value)


def test_numpy_booleans_are_booleans(pipe, photo):
    off = pipe(photo, use_det=np.bool_(False))
    assert np.isnan(off[OutputKeys.SCORES]).all() and off[OutputKeys.BOXES].shape == (1, 4)
    assert np.isfinite(pipe(photo, use_det=np.bool_(True))[OutputKeys.SCORES]).all()


@pytest.mark.parametrize("options, match", [
    ({"max_faces": "2"}, "max_faces"), ({"max_faces": 1.5}, "max_faces"), ({"max_faces": True}, "max_faces"),
    ({"batch_size": "4"}, "batch_size"), ({"batch_size": 2.0}, "batch_size"), ({"batch_size": None}, "batch_size"),
    ({"device": 1}, "device must be a string"), ({"device": ["cpu"]}, "device must be a string"),
    ({"detector_model": 5}, "detector_model"), ({"detector_model": ""}, "detector_model"),
], ids=str)
def test_wrong_option_types_at_construction(small_model_dir, options, match):
    """Checked before anything loads (``device=1``: before, ``'int' object has no attribute 'strip'``)."""
    with pytest.raises(ConfigurationError, match=match):
        pipeline(Tasks.face_recognition, str(small_model_dir), **{"device": "cpu", **options})


@pytest.mark.parametrize("options, match", [
    ({"max_faces": "2"}, "max_faces"), ({"max_faces": 0}, "max_faces"), ({"batch_size": "4"}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
], ids=str)
def test_wrong_option_types_per_call(pipe, photo, options, match):
    calls = [lambda: pipe(photo, **options), lambda: pipe([photo], **options)]
    if "batch_size" not in options:  # ModelScope's __call__ takes batch_size for itself (list batching)
        calls.append(lambda: Pipeline.__call__(pipe, photo, **options))
    for call in calls:
        with pytest.raises(ConfigurationError, match=match):
            call()


# ---------------------------------------------------------------------- ModelScope's stages
def test_stages_driven_by_modelscope_equal_the_call(pipe, photo, group_bgr):
    """ModelScope's ``Pipeline.__call__`` runs preprocess -> collate (numpy -> torch) -> forward -> postprocess;
    the result equals our own call, also with per-call options split by ``_sanitize_parameters``."""
    _assert_same(Pipeline.__call__(pipe, photo), pipe(photo))
    everyone = Pipeline.__call__(pipe, group_bgr, max_faces=None)
    assert len(everyone[OutputKeys.SCORES]) == 3
    _assert_same(everyone, pipe(group_bgr, max_faces=None))
    _assert_same(Pipeline.__call__(pipe, photo, use_det=False), pipe(photo, use_det=False))
    staged = pipe.postprocess(pipe.forward(pipe.preprocess(group_bgr, max_faces=2), batch_size=1))
    _assert_same(staged, pipe(group_bgr, max_faces=2, batch_size=1))  # same batches, bit-identical
    assert len(staged[OutputKeys.SCORES]) == 2


def test_stage_options_are_checked(pipe, photo):
    with pytest.raises(ConfigurationError, match="use_det"):
        pipe.preprocess(photo, use_det="false")
    with pytest.raises(UnknownOptionError):
        pipe.preprocess(photo, max_face=None)
    with pytest.raises(UnknownOptionError, match="batch_size"):
        pipe.preprocess(photo, batch_size=2)
    with pytest.raises(UnknownOptionError):
        pipe.forward(pipe.preprocess(photo), max_faces=2)
    with pytest.raises(UnknownOptionError):
        pipe.postprocess(pipe.forward(pipe.preprocess(photo)), anything=1)
