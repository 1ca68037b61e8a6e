"""examples/snippet.py and examples/compare_two_images.py, run as a user runs them (fresh processes).

Without a hub they must say so within seconds and point at the offline options; with a local model folder they
must work with no hub at all; with a reachable hub (the loopback emulator) the snippet's hub-id path works.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.tools.hub.probe import FACEMASK_MODEL_ID
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
from modelscope_facemask.testing.hub_emulator import HubEmulator, hub_environment
from modelscope_facemask.tools.hub.repository_writers import facemask_configuration, write_detector_repo

from .fixture_data import DETECTOR_FOLDER, SMALL_UNITS, linked_copy, linked_facemask_repo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIMILARITY = re.compile(r"Face cosine similarity=(-?\d\.\d{3}), img1:(.+?)  img2:(.+)$", re.M)


def closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_example(script: str, *args: str, env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    return done, time.perf_counter() - start


# The examples import modelscope_facemask (torch, ModelScope) before they ask the hub; that start-up takes 5 s on a
# warm 2-core machine and over 10 s on a cold one. The hub checks below are bounded by this start-up, measured here,
# plus an allowance that is far below ModelScope's own ~35 s of retries.
PROBE_ALLOWANCE_S = 8.0


@pytest.fixture(scope="module")
def startup_s() -> float:
    """Seconds a fresh interpreter takes to import what the examples import before the probe (second of two runs)."""
    code = "import modelscope_facemask.tools.demo, modelscope_facemask.tools.hub.probe"
    times = []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return max(times[-1], 1.0)


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """ModelScope pointed at a closed port (any hub call fails), with its own cache and home."""
    return {"MODELSCOPE_ENDPOINT": closed_port_endpoint(), "MODELSCOPE_CACHE": str(tmp_path / "ms-cache"),
            "MODELSCOPE_HOME": str(tmp_path / "ms-home")}


@pytest.fixture(scope="module")
def small_model_files(tmp_path_factory, small_model_dir, mobilenet_state) -> Path:
    """A self-contained small FaceMask repo (recognizer weights hard-linked): the real mobilenet0.25 detector in a
    folder inside it."""
    folder = tmp_path_factory.mktemp("small_facemask")
    linked_facemask_repo(folder, small_model_dir, facemask_configuration(detector=DETECTOR_FOLDER, units=SMALL_UNITS))
    write_detector_repo(folder / DETECTOR_FOLDER, mobilenet_state, MOBILENET025_CONFIG)
    return folder


def _assert_offline_advice(text: str) -> None:
    assert "The ModelScope hub is not reachable" in text
    for hint in ("facemask demo", "python examples/snippet.py --demo", "--model /path/to/snapshot"):
        assert hint in text


@pytest.mark.parametrize("script, args", [("snippet.py", ()), ("compare_two_images.py", ("a.jpg", "b.jpg"))])
def test_unreachable_hub_is_reported_within_seconds(script, args, offline_env, startup_s):
    done, elapsed = run_example(script, *args, env=offline_env, timeout=90)
    assert done.returncode == 2, done.stderr
    assert elapsed < startup_s + PROBE_ALLOWANCE_S, f"{elapsed:.1f} s (start-up {startup_s:.1f} s)"
    _assert_offline_advice(done.stderr)
    assert offline_env["MODELSCOPE_ENDPOINT"] in done.stderr
    assert "cosine" not in done.stdout


def test_silent_hub_is_given_up_after_the_timeout(offline_env, startup_s):
    """A firewall that drops packets: the probe waits --hub-timeout, not ModelScope's ~35 s of retries."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        env = {**offline_env, "MODELSCOPE_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        done, elapsed = run_example("snippet.py", "--hub-timeout", "1", env=env, timeout=90)
    assert done.returncode == 2, done.stderr
    assert elapsed < startup_s + PROBE_ALLOWANCE_S, f"{elapsed:.1f} s (start-up {startup_s:.1f} s)"
    assert "no answer within 1 s" in done.stderr
    _assert_offline_advice(done.stderr)


def test_snippet_and_compare_with_a_local_folder_need_no_hub(small_model_files, portraits, offline_env):
    done, _ = run_example("snippet.py", "--model", str(small_model_files), env=offline_env)
    assert done.returncode == 0, done.stderr
    match = SIMILARITY.search(done.stdout)
    assert match, done.stdout
    assert Path(match.group(2)).name == "person_a_1.jpg" and Path(match.group(3)).name == "person_a_2.jpg"
    assert "CC BY-SA 3.0 fr" in done.stdout  # the default portraits are credited

    done, _ = run_example("compare_two_images.py", str(portraits["person_a_1"]), str(portraits["person_a_2"]),
                          "--model", str(small_model_files), "--threshold", "-1", "--device", "cpu", env=offline_env)
    assert done.returncode == 0, done.stderr
    similarity = float(re.search(r"cosine similarity: (-?\d\.\d{4})", done.stdout).group(1))
    assert abs(similarity - float(match.group(1))) < 1e-3  # batched call = the snippet's one-by-one calls
    assert "same person (threshold -1)" in done.stdout
    assert done.stdout.count("detector score") == 2


def test_compare_reports_missing_faces_and_folders(small_model_files, tmp_path, offline_env, startup_s):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    done, _ = run_example("compare_two_images.py", str(blank), str(blank), "--model", str(small_model_files),
                          "--device", "cpu", env=offline_env)
    assert done.returncode == 1 and f"no face found in {blank}" in done.stderr
    done, elapsed = run_example("compare_two_images.py", str(blank), str(blank), "--model", str(tmp_path / "nothere"),
                                env=offline_env, timeout=90)
    assert done.returncode == 1 and "is not a folder" in done.stderr
    assert elapsed < startup_s + PROBE_ALLOWANCE_S, f"{elapsed:.1f} s (start-up {startup_s:.1f} s)"


def test_snippet_with_a_reachable_hub(small_model_files, portraits, tmp_path):
    """The hub-id path: probe, then ModelScope's own download and pipeline, against the loopback emulator."""
    with HubEmulator(tmp_path / "hub") as hub:
        linked_copy(small_model_files, hub.repo_dir(FACEMASK_MODEL_ID))  # the emulator only reads its files
        env = hub_environment(hub, tmp_path / "ms-cache", tmp_path / "ms-home")
        done, _ = run_example("snippet.py", str(portraits["person_b_1"]), str(portraits["person_b_2"]), env=env)
        paths = [r.path for r in hub.requests]
    assert done.returncode == 0, done.stderr
    assert SIMILARITY.search(done.stdout), done.stdout
    assert paths[0] == f"/api/v1/models/{FACEMASK_MODEL_ID}"  # the probe comes first, then ModelScope's calls
    assert any(p.endswith("/repo/files") for p in paths)
