"""What a bad client gets from ``facemask serve``: each fault is answered with its 4xx JSON error (one shape,
``{"error": {"code", "message"}}``), never a 500, and the next good request is answered. A real uvicorn server on
127.0.0.1 in a thread; raw sockets where a client misbehaves on the wire."""
from __future__ import annotations

import base64
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

pytest.importorskip("fastapi")

from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline  # noqa: E402
from modelscope_facemask.tools.serve.settings import ServeSettings  # noqa: E402

from .serve_helpers import metric_samples, multipart, raw_request, read_response, server_thread  # noqa: E402

READ_KEY, WRITE_KEY = "read-key-0123456789", "write-key-0123456789"
MAX_BODY = 1_000_000
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def pipeline(small_model_dir) -> FaceMaskPipeline:
    return FaceMaskPipeline(str(small_model_dir), device="cpu")


@pytest.fixture(scope="module")
def photo(portraits) -> bytes:
    return Path(portraits["person_a_1"]).read_bytes()  # 14 kB


@pytest.fixture(scope="module")
def server(pipeline, small_model_dir, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# the test's keys\n{READ_KEY} read\n\n{WRITE_KEY}   write\n")
    settings = ServeSettings(model=str(small_model_dir), max_body_bytes=MAX_BODY, request_timeout_s=TIMEOUT_S,
                             api_key_file=str(keys))
    with server_thread(settings, pipeline) as url:
        yield url


READ = {"Authorization": f"Bearer {READ_KEY}"}


def _good(url: str, photo: bytes) -> None:
    """The next good request is answered."""
    answer = requests.post(f"{url}/v1/embed", files={"images": photo}, headers=READ, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"][0]["faces"]) == 1


def _error(answer: requests.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == code and set(error) == {"code", "message"} and "Traceback" not in error["message"]
    return error["message"]


def test_malformed_json(server, photo):
    answer = requests.post(f"{server}/v1/embed", data=b'{"images": [', headers={**READ, "Content-Type":
                                                                                "application/json"}, timeout=30)
    _error(answer, 400, "malformed_json")
    _error(requests.post(f"{server}/call", data=b"[1, 2]", headers={**READ, "Content-Type": "application/json"},
                         timeout=30), 400, "malformed_json")
    _good(server, photo)


def test_wrong_content_type(server, photo):
    answer = requests.post(f"{server}/v1/embed", data=photo, headers={**READ, "Content-Type": "image/jpeg"},
                           timeout=30)
    assert "multipart/form-data" in _error(answer, 415, "unsupported_media_type")
    _good(server, photo)


def test_oversized_body_by_its_length_and_while_streaming(server, photo):
    big = b"x" * (MAX_BODY + 1)
    _error(requests.post(f"{server}/v1/embed", files={"images": big}, headers=READ, timeout=30), 413, "body_too_large")

    def chunks():  # a valid multipart upload without Content-Length: refused once the count passes the limit
        yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="big.jpg"\r\n\r\n'
        for _ in range(40):
            yield b"y" * 50_000
        yield b"\r\n--b--\r\n"

    answer = requests.post(f"{server}/v1/embed", data=chunks(), timeout=30,
                           headers={**READ, "Content-Type": "multipart/form-data; boundary=b"})
    _error(answer, 413, "body_too_large")
    _good(server, photo)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels; a few bytes of data (a decompression bomb's
    header: decoding it would need width x height x 3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def test_decompression_bomb(server, photo):
    bomb = _png_header(60_000, 60_000)
    message = _error(requests.post(f"{server}/v1/verify", files={"image_a": bomb, "image_b": photo}, headers=READ,
                                   timeout=30), 413, "image_too_large")
    assert "60000x60000" in message and "image_a" in message
    body = {"input": {"image": base64.b64encode(bomb).decode()}}
    _error(requests.post(f"{server}/call", json=body, headers=READ, timeout=30), 413, "image_too_large")
    answer = requests.post(f"{server}/v1/embed", files=[("images", bomb), ("images", photo)], headers=READ, timeout=60)
    assert answer.status_code == 200
    first, second = answer.json()["images"]
    assert first["error"]["code"] == "image_too_large" and len(second["faces"]) == 1
    _good(server, photo)


def test_unknown_route_and_method(server, photo):
    _error(requests.get(f"{server}/v2/nothing", headers=READ, timeout=30), 404, "not_found")
    _error(requests.get(f"{server}/v1/embed", headers=READ, timeout=30), 405, "method_not_allowed")
    _good(server, photo)


def test_keys(server, photo):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": READ_KEY[:-1]}):
        answer = requests.post(f"{server}/v1/embed", files={"images": photo}, headers=headers, timeout=30)
        _error(answer, 401, "unauthorized")
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert requests.post(f"{server}/v1/embed", files={"images": photo}, headers={"X-API-Key": READ_KEY},
                         timeout=60).status_code == 200
    _error(requests.get(f"{server}/metrics", timeout=30), 401, "unauthorized")
    assert requests.get(f"{server}/metrics", headers=READ, timeout=30).status_code == 200
    for path in ("/healthz", "/readyz", "/health"):
        assert requests.get(f"{server}{path}", timeout=30).status_code == 200, path
    # a read key may not change the gallery (this server has none: the key is checked first)
    _error(requests.delete(f"{server}/v1/gallery/identities/x", headers=READ, timeout=30), 403, "forbidden")
    _error(requests.delete(f"{server}/v1/gallery/identities/x", headers={"X-API-Key": WRITE_KEY}, timeout=30), 409,
           "no_gallery")
    _good(server, photo)


def test_client_disconnecting_mid_upload(server, photo):
    body, kind = multipart({}, [("images", "a.jpg", photo)])
    head = (f"POST /v1/embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_KEY}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}")
    raw_request(server, head, body[: len(body) // 2]).close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server saw it (answered 400 to nobody) ...
        if any(s.labels["route"] == "/v1/embed" and s.labels["status"] == "400" and s.value >= 1
               for s in metric_samples(server, "facemask_requests_total", READ)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the disconnect was not counted")
    _good(server, photo)  # ... and answers the next client


def test_a_body_that_never_finishes_is_bounded_by_the_timeout(server, photo):
    body, kind = multipart({}, [("images", "a.jpg", photo)])
    head = (f"POST /v1/embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_KEY}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}")
    sock = raw_request(server, head, body[:100])
    try:
        sock.settimeout(TIMEOUT_S + 30)
        status, answer = read_response(sock)
    finally:
        sock.close()
    assert status == 408 and b'"request_timeout"' in answer
    _good(server, photo)


class _GatedPipeline:
    """The real pipeline, whose batches wait for ``gate`` (the warm-up passes)."""

    def __init__(self, pipeline: FaceMaskPipeline) -> None:
        self.pipeline, self.gate, self.entered = pipeline, threading.Event(), threading.Event()
        self.warm = False

    def run_batch(self, *args, **kwargs):
        if self.warm:
            self.entered.set()
            assert self.gate.wait(60)
        return self.pipeline.run_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def test_a_full_queue_answers_503_with_retry_after(pipeline, small_model_dir, photo):
    gated = _GatedPipeline(pipeline)
    settings = ServeSettings(model=str(small_model_dir), max_batch=1, max_wait_ms=0, queue_size=1)
    with server_thread(settings, gated) as url:
        gated.warm = True
        answers: dict[str, requests.Response] = {}

        def send(slot: str) -> None:
            answers[slot] = requests.post(f"{url}/v1/embed", files={"images": photo}, timeout=60)

        first = threading.Thread(target=send, args=("running",))
        first.start()
        assert gated.entered.wait(30)  # the worker holds the first image
        second = threading.Thread(target=send, args=("queued",))
        second.start()
        deadline = time.monotonic() + 30
        while not any(s.value >= 1 for s in metric_samples(url, "facemask_queue_depth")):
            assert time.monotonic() < deadline, "the second image never queued"
            time.sleep(0.02)
        full = requests.post(f"{url}/v1/embed", files={"images": photo}, timeout=30)
        _error(full, 503, "queue_full")
        assert full.headers["Retry-After"] == "1"
        # the event loop is free while the worker is busy: other routes are answered
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        gated.gate.set()
        first.join(60)
        second.join(60)
        assert answers["running"].status_code == answers["queued"].status_code == 200
        assert requests.post(f"{url}/v1/embed", files={"images": photo}, timeout=60).status_code == 200


def test_key_file_format(tmp_path):
    from modelscope_facemask.errors import ConfigurationError
    from modelscope_facemask.tools.serve.auth import ApiKeys

    good = tmp_path / "keys.txt"
    good.write_text("alpha\nbeta read  # a comment\n# only a comment\ngamma WRITE\n")
    keys = ApiKeys.read(good)
    assert [keys.scope_of(k) for k in ("alpha", "beta", "gamma", "delta", "", None)] == \
        ["write", "read", "write", None, None, None]
    assert "alpha" not in repr(keys)  # only digests are kept
    for text, fragment in (("k admin\n", "line 1"), ("k read extra\n", "line 1"), ("# none\n", "holds no key")):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(ConfigurationError, match=fragment):
            ApiKeys.read(bad)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        ApiKeys.read(tmp_path / "missing.txt")


def test_not_ready_until_warmed_up(pipeline, small_model_dir, photo):
    gated = _GatedPipeline(pipeline)
    gated.warm = True  # the warm-up itself waits for the gate
    with server_thread(ServeSettings(model=str(small_model_dir)), gated, wait_ready=False) as url:
        assert gated.entered.wait(30)
        _error(requests.get(f"{url}/readyz", timeout=30), 503, "not_ready")
        _error(requests.post(f"{url}/v1/embed", files={"images": photo}, timeout=30), 503, "not_ready")
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
        gated.gate.set()
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert requests.post(f"{url}/v1/embed", files={"images": photo}, timeout=60).status_code == 200
