"""Running the app under uvicorn: the socket bound first (``port 0`` picks a free port), one line
``serving on http://HOST:PORT`` once the model is warmed up, and a graceful stop on SIGTERM or Ctrl-C: the listening
socket closes, every accepted request is answered, then :func:`serve_forever` returns (exit 0 for SIGTERM)."""
from __future__ import annotations

import signal
import socket
import sys
from typing import Any, Callable

import uvicorn

#: seconds accepted requests get to finish after SIGTERM before they are cancelled
GRACEFUL_TIMEOUT_S = 60.0


class _Server(uvicorn.Server):
    """uvicorn's server, except that a caught signal is remembered, not raised again once the server stopped."""

    stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopped_by = sig
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(make_app: Callable[[Callable[[], None]], Any], sock: socket.socket, *,
                  log_level: str = "warning", announce: Callable[[str], None] | None = None) -> int | None:
    """Serve ``make_app(on_ready)`` on ``sock`` until a signal; returns the signal that stopped it (or None).

    ``on_ready`` prints (or passes to ``announce``) the ``serving on URL`` line."""
    url = url_of(sock)

    def on_ready() -> None:
        line = f"serving on {url}"
        if announce is not None:
            announce(line)
        else:
            print(line, flush=True)
            sys.stdout.flush()

    config = uvicorn.Config(make_app(on_ready), log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S, server_header=False)
    server = _Server(config)
    server.run(sockets=[sock])
    return server.stopped_by
