"""The documented snippet, verbatim, through ModelScope's own hub client against the loopback hub emulator, and the
same model offline from a local snapshot folder. Each run is a fresh subprocess (ModelScope reads its hub settings
once per process), with the real photos served by a loopback HTTP server."""
from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.faces.images import load_image
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
from modelscope_facemask.testing.hub_emulator import HubEmulator, hub_environment
from modelscope_facemask.tools.hub.repository_writers import facemask_configuration, write_detector_repo

from .fixture_data import SMALL_UNITS, linked_facemask_repo
from .reference_models import reference_face_embeddings, reference_iresnet

MODEL_ID = "damo/cv_resnet_face-recognition_facemask"
R50_ID = "damo/cv_resnet50_face-detection_retinaface"
MOBILENET_ID = "facemask-test/retinaface-mobilenet0.25"

SNIPPET = """
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from modelscope.outputs import OutputKeys
import numpy as np
import modelscope_facemask
p = pipeline(Tasks.face_recognition, 'damo/cv_resnet_face-recognition_facemask')
emb1 = p(img1)[OutputKeys.IMG_EMBEDDING]; emb2 = p(img2)[OutputKeys.IMG_EMBEDDING]
sim = np.dot(emb1[0], emb2[0])
"""

OFFLINE = """
from modelscope.hub.snapshot_download import snapshot_download
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from modelscope.outputs import OutputKeys
import numpy as np
import modelscope_facemask
d = snapshot_download('damo/cv_resnet_face-recognition_facemask', local_files_only=True)
p = pipeline(Tasks.face_recognition, d)
emb1 = p(img1)[OutputKeys.IMG_EMBEDDING]; emb2 = p(img2)[OutputKeys.IMG_EMBEDDING]
sim = np.dot(emb1[0], emb2[0])
"""

DUMP = """
np.savez(OUT, emb1=emb1, emb2=emb2, sim=sim, kp1=p(img1)[OutputKeys.KEYPOINTS], kp2=p(img2)[OutputKeys.KEYPOINTS],
         device=str(p.device_used), cls=type(p).__name__)
"""


@pytest.fixture(scope="module")
def photo_server(portraits):
    """http://127.0.0.1:PORT/<name>.jpg for the portraits."""
    folder = next(iter(portraits.values())).parent
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link a model folder into the emulator's root (the full weights are 498 MB)."""
    shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def official_hub(tmp_path_factory, full_recognizer_dir, r50_detector_dir):
    """(a) the official card (framework/task/pipeline.type only) + full-size weights; the default R50 detector repo."""
    root = tmp_path_factory.mktemp("hub_official")
    _link_tree(full_recognizer_dir, root / MODEL_ID)
    _link_tree(r50_detector_dir, root / R50_ID)
    return root


@pytest.fixture(scope="module")
def our_card_hub(tmp_path_factory, small_model_dir, mobilenet_state):
    """(b) this project's configuration.json, small recognizer (weights hard-linked), detector named by hub id (real
    mobilenet0.25)."""
    root = tmp_path_factory.mktemp("hub_ours")
    linked_facemask_repo(root / MODEL_ID, small_model_dir,
                         facemask_configuration(detector=MOBILENET_ID, units=SMALL_UNITS))
    write_detector_repo(root / MOBILENET_ID, mobilenet_state, MOBILENET025_CONFIG)
    return root


def _run(code: str, env: dict[str, str], out: Path, img1: str, img2: str) -> dict:
    script = f"img1 = {img1!r}\nimg2 = {img2!r}\nOUT = {str(out)!r}\n" + code + DUMP
    full_env = {**os.environ, **env}
    full_env.pop("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", None)  # a user's default: the region probe is made
    result = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there afterwards


def _check_against_reference(result: dict, net, portraits, names: tuple[str, str]) -> None:
    assert str(result["cls"]) == "FaceMaskPipeline" and str(result["device"]) == "cpu"
    for key, kp, name in (("emb1", "kp1", names[0]), ("emb2", "kp2", names[1])):
        expected = reference_face_embeddings(net, load_image(portraits[name]), result[kp])
        assert result[key].shape == (1, 512)
        assert np.abs(result[key] - expected).max() <= 1e-5
    assert float(result["sim"]) == pytest.approx(float(np.dot(result["emb1"][0], result["emb2"][0])), abs=1e-6)


@pytest.mark.parametrize("scenario", ["official_card", "our_card"])
def test_snippet_through_hub_then_offline_snapshot(scenario, request, tmp_path, portraits, photo_server,
                                                   full_recognizer_state, small_recognizer_state):
    root = request.getfixturevalue("official_hub" if scenario == "official_card" else "our_card_hub")
    names = ("person_a_1", "person_a_2")
    img1, img2 = (f"{photo_server}/{portraits[n].name}" for n in names)
    if scenario == "official_card":
        net = reference_iresnet((6, 21, 66, 6), full_recognizer_state)
    else:
        net = reference_iresnet(SMALL_UNITS, small_recognizer_state)
    cache, home = tmp_path / "cache", tmp_path / "home"
    with HubEmulator(root) as hub:
        env = hub_environment(hub, cache, home)
        online = _run(textwrap.dedent(SNIPPET), env, tmp_path / "online.npz", img1, img2)
        paths = [r.path for r in hub.requests]
    _check_against_reference(online, net, portraits, names)
    model_files = f"/api/v1/models/{MODEL_ID}/repo/files"
    assert f"/openapi/v1/models/{MODEL_ID}" in paths and model_files in paths
    detector_id = R50_ID if scenario == "official_card" else MOBILENET_ID
    assert f"/api/v1/models/{detector_id}/repo/files" in paths

    # offline: the same cache, a hub that does not answer, a local snapshot folder
    env["MODELSCOPE_ENDPOINT"] = _dead_endpoint()
    offline = _run(textwrap.dedent(OFFLINE), env, tmp_path / "offline.npz", img1, img2)
    assert np.array_equal(offline["emb1"], online["emb1"]) and np.array_equal(offline["emb2"], online["emb2"])
