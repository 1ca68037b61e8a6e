"""Registration, configuration handling and the pipeline contract, on local model folders (no hub)."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from modelscope.models.builder import MODELS
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.pipelines.builder import PIPELINES
from modelscope.preprocessors import Preprocessor
from modelscope.preprocessors.builder import PREPROCESSORS
from modelscope.utils.constant import Fields, Tasks
from PIL import Image

import modelscope_facemask
from modelscope_facemask import FaceMaskModel, FaceMaskPipeline, FaceMaskPreprocessor
from modelscope_facemask.errors import ConfigurationError, DeviceError, ImageLoadError
from modelscope_facemask.faces.images import load_image
from modelscope_facemask.metainfo import Models, Pipelines, Preprocessors
from modelscope_facemask.tools.hub.repository_writers import facemask_configuration
from modelscope_facemask.tools.demo.synthetic_weights import smooth_images

from .fixture_data import SMALL_UNITS
from .reference_models import reference_face_embeddings, reference_iresnet


@pytest.fixture(scope="module")
def model_dir(small_model_dir):
    """A self-contained repo: our configuration.json, small recognizer, the real mobilenet detector inside."""
    return small_model_dir


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline(Tasks.face_recognition, str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def reference(small_recognizer_state):
    return reference_iresnet(SMALL_UNITS, small_recognizer_state)


@pytest.fixture(scope="module")
def group_photo(portraits):
    """Three portraits side by side on one canvas (RGB)."""
    faces = [load_image(portraits[n]) for n in ("person_a_2", "person_b_1", "impostor_2")]
    height = max(f.shape[0] for f in faces)
    canvas = np.full((height, sum(f.shape[1] for f in faces), 3), 200, np.uint8)
    x = 0
    for f in faces:
        canvas[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1]
    return canvas


def test_registered_names():
    assert MODELS.get(Models.facemask, group_key=Tasks.face_recognition) is FaceMaskModel
    assert PREPROCESSORS.get(Preprocessors.facemask_preprocessor, group_key=Fields.cv) is FaceMaskPreprocessor
    assert PIPELINES.get(Pipelines.facemask, group_key=Tasks.face_recognition) is FaceMaskPipeline
    assert PIPELINES.get(Pipelines.builtin_facemask, group_key=Tasks.face_recognition) is FaceMaskPipeline


def test_builtin_name_resolves_to_ours_and_matches_reference(pipe, portraits, reference):
    assert type(pipe) is FaceMaskPipeline and str(pipe.device_used) == "cpu"
    image = load_image(portraits["person_a_1"])
    out = pipe(str(portraits["person_a_1"]))
    assert out[OutputKeys.IMG_EMBEDDING].shape == (1, 512) and out[OutputKeys.IMG_EMBEDDING].dtype == np.float32
    assert out[OutputKeys.SCORES].shape == (1,) and out[OutputKeys.BOXES].shape == (1, 4)
    assert out[OutputKeys.KEYPOINTS].shape == (1, 10)
    expected = reference_face_embeddings(reference, image, out[OutputKeys.KEYPOINTS])
    assert np.abs(out[OutputKeys.IMG_EMBEDDING] - expected).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(out[OutputKeys.IMG_EMBEDDING], axis=1), 1.0, atol=1e-6)


def test_every_input_type_gives_the_same_result(pipe, portraits):
    path = portraits["impostor_1"]
    rgb = load_image(path)
    inputs = [str(path), path, path.read_bytes(), Image.open(path), rgb[:, :, ::-1].copy(), {"image": str(path)}]
    outs = [pipe(x) for x in inputs]
    for out in outs[1:]:
        assert np.array_equal(out[OutputKeys.IMG_EMBEDDING], outs[0][OutputKeys.IMG_EMBEDDING])
        assert np.array_equal(out[OutputKeys.BOXES], outs[0][OutputKeys.BOXES])


def test_list_input_equals_one_by_one(pipe, portraits, group_photo):
    inputs = [str(portraits[n]) for n in ("person_a_1", "person_b_2")] + [group_photo[:, :, ::-1].copy()]
    batched = pipe(inputs, max_faces=None)
    assert isinstance(batched, list) and len(batched) == 3
    for x, got in zip(inputs, batched):
        single = pipe(x, max_faces=None)
        assert len(got[OutputKeys.IMG_EMBEDDING]) == len(single[OutputKeys.IMG_EMBEDDING])
        np.testing.assert_allclose(got[OutputKeys.IMG_EMBEDDING], single[OutputKeys.IMG_EMBEDDING], atol=1e-5)
        np.testing.assert_allclose(got[OutputKeys.BOXES], single[OutputKeys.BOXES], atol=1e-3)


def test_per_call_batch_size(pipe, group_photo):
    bgr = group_photo[:, :, ::-1].copy()
    default = pipe([bgr], max_faces=None)[0]
    one_at_a_time = pipe([bgr], max_faces=None, batch_size=1)[0]
    np.testing.assert_allclose(one_at_a_time[OutputKeys.IMG_EMBEDDING], default[OutputKeys.IMG_EMBEDDING], atol=1e-5)


def test_group_photo_all_faces_and_largest_by_default(pipe, group_photo, reference):
    bgr = group_photo[:, :, ::-1].copy()
    everyone = pipe(bgr, max_faces=None)
    assert len(everyone[OutputKeys.SCORES]) == 3
    assert np.all(everyone[OutputKeys.SCORES] > 0.9) and np.all(np.diff(everyone[OutputKeys.SCORES]) <= 0)
    expected = reference_face_embeddings(reference, group_photo, everyone[OutputKeys.KEYPOINTS])
    assert np.abs(everyone[OutputKeys.IMG_EMBEDDING] - expected).max() <= 1e-5
    largest = pipe(bgr)
    boxes = everyone[OutputKeys.BOXES]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert np.array_equal(largest[OutputKeys.BOXES][0], boxes[np.argmax(areas)])
    assert len(pipe(bgr, max_faces=2)[OutputKeys.SCORES]) == 2


def test_no_face_gives_empty_rows_and_a_log_line(pipe, caplog):
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        out = pipe(smooth_images(1, 240, 320, seed=3)[0])
    assert out[OutputKeys.IMG_EMBEDDING].shape == (0, 512) and out[OutputKeys.SCORES].shape == (0,)
    assert out[OutputKeys.BOXES].shape == (0, 4) and out[OutputKeys.KEYPOINTS].shape == (0, 10)
    assert any("no face" in r.getMessage() for r in caplog.records)


def test_bad_item_in_a_batch_does_not_sink_the_others(pipe, portraits, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    outs = pipe([str(portraits["person_a_1"]), str(broken), 42])
    assert len(outs[0][OutputKeys.IMG_EMBEDDING]) == 1
    assert "broken.jpg" in outs[1]["error"] and outs[1][OutputKeys.IMG_EMBEDDING].shape == (0, 512)
    assert "error" in outs[2]
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        pipe(str(broken))


def test_use_det_false_matches_builtin_resize(model_dir, reference, portraits):
    p = pipeline(Tasks.face_recognition, str(model_dir), device="cpu", use_det=False)
    image = load_image(portraits["person_b_1"])
    out = p(image[:, :, ::-1].copy())
    import cv2

    from .reference_models import reference_embedding

    expected = reference_embedding(reference, cv2.resize(image[:, :, ::-1].copy(), (112, 112)))
    assert np.abs(out[OutputKeys.IMG_EMBEDDING] - expected).max() <= 1e-5
    assert np.isnan(out[OutputKeys.SCORES]).all()


def test_model_and_preprocessor_from_pretrained(model_dir, portraits):
    from modelscope.models import Model

    model = Model.from_pretrained(str(model_dir), device="cpu")
    assert isinstance(model, FaceMaskModel)
    pre = Preprocessor.from_pretrained(str(model_dir), device="cpu")
    assert isinstance(pre, FaceMaskPreprocessor)
    prepared = pre(str(portraits["person_a_2"]))
    emb = model(prepared)[OutputKeys.IMG_EMBEDDING]
    assert emb.shape == (1, 512)


def test_device_handling(model_dir, caplog, monkeypatch):
    with pytest.raises(DeviceError, match="cuda:7"):
        pipeline(Tasks.face_recognition, str(model_dir), device="cuda:7")
    if not torch.cuda.is_available():
        monkeypatch.setattr("modelscope_facemask.engines.devices._announced", set())  # logged once per process
        with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
            p = pipeline(Tasks.face_recognition, str(model_dir))  # ModelScope's default device is 'gpu' (= 'auto')
        assert str(p.device_used) == "cpu"
        notes = [r for r in caplog.records if "CUDA is not available" in r.getMessage()]
        assert len(notes) == 1 and notes[0].levelno == logging.INFO  # an expected setup: INFO, not WARNING


def test_bad_options_are_clear_errors(model_dir, pipe):
    with pytest.raises(ConfigurationError, match="max_faces"):
        pipe(smooth_images(1, 64, 64)[0], max_faces=0)
    with pytest.raises(ConfigurationError, match="detector"):
        pipeline(Tasks.face_recognition, str(model_dir), device="cpu", detector_model="not a detector")


def test_detector_override_by_folder(model_dir, mobilenet_detector_dir, portraits):
    p = pipeline(Tasks.face_recognition, str(model_dir), device="cpu", detector_model=str(mobilenet_detector_dir))
    assert len(p(str(portraits["impostor_2"]))[OutputKeys.SCORES]) == 1


def test_builtin_without_scikit_image(model_dir):
    """The built-in module imports scikit-image at import time. Without it, ModelScope's built-in pipeline cannot
    even be imported; with the plugin imported, the built-in name still builds our pipeline."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules['skimage'] = None  # as if scikit-image were not installed
        from modelscope.utils.import_utils import LazyImportModule
        try:
            LazyImportModule.import_module(('PIPELINES', 'face-recognition', 'resnet-face-recognition-facemask'))
        except ImportError as exc:
            print('BUILTIN-FAILS', exc)
        import numpy as np
        import modelscope_facemask
        from modelscope.pipelines import pipeline
        p = pipeline('face-recognition', {str(model_dir)!r}, device='cpu')
        print('OURS', type(p).__name__, p(np.zeros((64, 64, 3), np.uint8))['img_embedding'].shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "BUILTIN-FAILS" in result.stdout and "skimage" in result.stdout
    assert "OURS FaceMaskPipeline (0, 512)" in result.stdout, result.stderr[-2000:]


def test_package_version_is_pep440_and_matches_the_installed_distribution(capsys):
    """__version__ is a normalised PEP 440 version, equal to what setup.py builds, to the installed distribution's
    metadata (a stale install fails here: reinstall with `pip install -e .`) and to `facemask --version`."""
    from importlib.metadata import version as installed_version
    from pathlib import Path

    from packaging.version import Version

    from modelscope_facemask.cli import main

    declared = modelscope_facemask.__version__
    assert str(Version(declared)) == declared
    setup_py = Path(__file__).parent.parent / "setup.py"
    built = subprocess.run([sys.executable, str(setup_py), "--version"], capture_output=True, text=True,
                           cwd=setup_py.parent, timeout=120, check=True).stdout.split()
    assert built[-1:] == [declared]
    assert installed_version("modelscope-facemask") == declared
    try:
        code = main(["--version"])
    except SystemExit as exc:  # argparse's version action exits
        code = exc.code
    assert code in (0, None)
    assert capsys.readouterr().out.strip() == f"modelscope-facemask {declared}"


def test_repository_configuration_is_the_published_card():
    import json
    from pathlib import Path

    card = json.loads((Path(__file__).parent.parent / "configuration.json").read_text())
    assert card == facemask_configuration()
    assert "plugins" not in card  # see README: ModelScope would pip-install them on every pipeline() call


def test_bad_batch_size_is_a_clear_error(pipe):
    with pytest.raises(ConfigurationError, match="batch_size"):
        pipe(smooth_images(1, 64, 64)[0], batch_size=-1)
    with pytest.raises(ConfigurationError, match="batch_size"):
        pipe(smooth_images(1, 64, 64)[0], batch_size=0)


def test_degenerate_image_in_a_list_is_reported_not_fatal(pipe, portraits):
    thin = np.zeros((1, 2000, 3), np.uint8)  # resized to 1000 px wide for detection, it would be 0 px high
    outs = pipe([str(portraits["person_a_1"]), thin])
    assert len(outs[0][OutputKeys.IMG_EMBEDDING]) == 1
    assert "2000x1 px" in outs[1]["error"] and outs[1][OutputKeys.IMG_EMBEDDING].shape == (0, 512)


def test_long_lists_run_in_chunks_with_the_same_results(pipe, portraits, monkeypatch):
    from modelscope_facemask.modelscope_adapters import pipeline as pipeline_module

    inputs = [str(portraits[n]) for n in ("person_a_1", "impostor_1", "person_b_2", "impostor_2", "person_a_2")]
    whole = pipe(inputs)
    monkeypatch.setattr(pipeline_module, "IMAGES_PER_CHUNK", 2)
    chunked = pipe(inputs)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a[OutputKeys.IMG_EMBEDDING], b[OutputKeys.IMG_EMBEDDING], atol=1e-5)
        np.testing.assert_allclose(a[OutputKeys.BOXES], b[OutputKeys.BOXES], atol=1e-3)


@pytest.mark.parametrize("preprocessor, match", [({"use_det": "false"}, "use_det"),
                                                 ({"min_face_size": "ten"}, "min_face_size"),
                                                 ({"max_faces": 0}, "max_faces")])
def test_invalid_configuration_values(preprocessor, match):
    from modelscope_facemask.modelscope_adapters.configuration import facemask_settings

    with pytest.raises(ConfigurationError, match=match):
        facemask_settings({"preprocessor": preprocessor})


def test_invalid_retinaface_levels():
    from modelscope_facemask.nets.retinaface import RetinaFaceConfig

    with pytest.raises(ConfigurationError, match="three FPN levels"):
        RetinaFaceConfig(min_sizes=((16, 32), (64, 128)), steps=(8, 16))
    with pytest.raises(ConfigurationError, match="three FPN levels"):
        RetinaFaceConfig(min_sizes=((16,), (64, 128), (256, 512)))


def test_negative_cuda_index_is_a_device_error():
    from modelscope_facemask.engines.devices import resolve_device

    with pytest.raises(DeviceError):
        resolve_device("cuda:-1")


def test_automatic_device_is_chosen_and_logged_once_at_info(monkeypatch, caplog):
    from modelscope_facemask.engines.devices import resolve_device

    monkeypatch.setattr("modelscope_facemask.engines.devices._announced", set())
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        assert [resolve_device(d) for d in ("auto", "gpu", None, " AUTO ")] == [expected] * 4
        assert resolve_device() == expected  # 'auto' is the default
    notes = [r for r in caplog.records if r.getMessage().startswith("device ")]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO, [r.getMessage() for r in notes]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="does not exist"):
            resolve_device("cuda")  # an explicit CUDA device must exist
