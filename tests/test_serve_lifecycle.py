"""``facemask serve`` as a process: SIGTERM stops accepting, answers the request in flight, and exits 0; kill -9
during enrolment loses no acknowledged enrolment and leaves a gallery that opens (and can be written again)."""
from __future__ import annotations

import io
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

pytest.importorskip("fastapi")

from modelscope_facemask.testing.served_process import ServedFaceMask  # noqa: E402

from .serve_helpers import host_port, multipart, raw_request, read_response  # noqa: E402


def _refused(url: str) -> bool:
    try:
        socket.create_connection(host_port(url), timeout=2).close()
    except OSError:
        return True
    return False


def test_sigterm_answers_the_request_in_flight_then_exits_0(small_model_dir, portraits):
    with ServedFaceMask(small_model_dir) as server:
        process, url = server.process, server.url
        photo = Path(portraits["person_a_1"]).read_bytes()
        body, kind = multipart({}, [("images", "a.jpg", photo)])
        head = (f"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}")
        sock = raw_request(url, head, body[: len(body) // 2])  # accepted, half its body sent
        time.sleep(1.5)  # the server has read the request's head by then (no timing is asserted)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while not _refused(url):  # stops accepting
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.1)
        sock.sendall(body[len(body) // 2 :])
        sock.settimeout(60)
        status, answer = read_response(sock)
        sock.close()
        assert status == 200 and b'"embedding"' in answer
        assert process.wait(60) == 0, server.output


def _variants(photo_path: Path, count: int) -> list[bytes]:
    """``count`` different PNGs of one small portrait (one pixel changed each: distinct photos to enrol)."""
    from PIL import Image

    base = Image.open(photo_path).convert("RGB")
    out = []
    for i in range(count):
        image = base.copy()
        image.putpixel((i % image.width, 0), (i % 256, 255 - i % 256, 7))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def test_kill_9_during_enrolment_loses_nothing_acknowledged(small_model_dir, portraits, tmp_path):
    pytest.importorskip("faiss")
    from modelscope_facemask.tools.gallery.face_gallery import FaceGallery
    from modelscope_facemask.tools.gallery.writer_lock import holding_writer_lock

    folder = tmp_path / "G"
    photos = _variants(Path(portraits["person_a_1"]), 40)
    server = ServedFaceMask(small_model_dir, gallery=folder).__enter__()
    process, url = server.process, server.url
    acknowledged: list[str] = []
    stop = threading.Event()

    def enrol() -> None:
        for i, photo in enumerate(photos):
            if stop.is_set():
                return
            try:
                answer = requests.post(f"{url}/v1/gallery/identities", data={"identity": f"person-{i:02d}"},
                                       files={"images": photo}, timeout=60)
            except requests.RequestException:
                return  # the server died under this request: not acknowledged
            if answer.status_code == 200 and answer.json()["enrolled"] == 1:
                acknowledged.append(f"person-{i:02d}")

    try:
        writer = threading.Thread(target=enrol)
        writer.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 5:
            assert time.monotonic() < deadline and writer.is_alive(), "enrolments are not acknowledged"
            time.sleep(0.01)
        process.kill()  # SIGKILL while the client keeps enrolling
        stop.set()
        writer.join(60)
        process.wait(30)
    finally:
        server.stop()
    gallery = FaceGallery.load(folder)  # opens: every file matches its manifest
    enrolled = set(gallery.identities())
    assert set(acknowledged) <= enrolled, sorted(set(acknowledged) - enrolled)
    assert len(enrolled) <= len(acknowledged) + 1  # at most the one in flight when killed
    with holding_writer_lock(folder, timeout=5):  # the dead server's lock is free
        pass


def test_without_the_serve_extra_the_command_names_it(tmp_path):
    """fastapi missing (hidden in a fresh interpreter): exit 2, one line ending with the pip command."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from modelscope_facemask.cli import main\n"
            f"sys.exit(main(['serve', '--model', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("pip install 'modelscope-facemask[serve]'")


def test_a_port_in_use_fails_before_the_model_loads(tmp_path, capsys):
    from modelscope_facemask.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path / "no-such-model"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
