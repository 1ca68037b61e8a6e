"""Helpers of the server tests: a real uvicorn server on 127.0.0.1 in a thread (in-process, sharing a pipeline
with the test); raw HTTP over a socket for the fault tests. ``facemask serve`` in a subprocess:
:class:`modelscope_facemask.testing.served_process.ServedFaceMask`."""
from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from typing import Any, Iterator

import requests

READY_TIMEOUT_S = 240


@contextlib.contextmanager
def server_thread(settings: Any, pipeline: Any, *, gallery: Any = None, wait_ready: bool = True) -> Iterator[str]:
    """``create_app(settings, pipeline)`` served on a free port in a thread; yields its base URL once ready (or,
    with ``wait_ready=False``, once it answers ``/healthz``)."""
    import uvicorn

    from modelscope_facemask.tools.serve.app import create_app
    from modelscope_facemask.tools.serve.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    ready = threading.Event()
    app = create_app(settings, pipeline, gallery=gallery, on_ready=ready.set)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if wait_ready:
            assert ready.wait(READY_TIMEOUT_S), "the server did not warm up"
        else:
            _wait_alive(url_of(sock))
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def _wait_alive(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server never answered /healthz")


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    """A socket that sent ``head`` (request line and headers, without the blank line) and ``body``."""
    sock = socket.create_connection(host_port(url), timeout=30)
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status code and body of the response on ``sock`` (read until the server closes or Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = re.search(rb"content-length: *(\d+)", head, re.I)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def multipart(fields: dict[str, Any], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = "facemask-test-boundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
              for name, filename, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def metric_samples(url: str, name: str, headers: dict[str, str] | None = None) -> list[Any]:
    """The samples of metric family ``name`` from ``GET /metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", headers=headers, timeout=30).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith(name)]
