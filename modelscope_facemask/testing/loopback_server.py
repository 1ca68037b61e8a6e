"""The life cycle both hub emulators share: an HTTP server on a free 127.0.0.1 port, served from a daemon thread.

A subclass names its request handler (``handler_class``); the handler reaches the emulator as
``self.server.emulator``. A client hanging up mid-answer (a hub client abandoning a download it rejected) is not
an emulator failure and is not printed.
"""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

_Self = TypeVar("_Self", bound="LoopbackServer")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Start/stop and context-manager support; ``start`` on a running server does nothing."""

    handler_class: type[BaseHTTPRequestHandler]
    thread_name = "loopback-server"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the server must be running)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it as a context manager or call start()")
        return self._server.server_address[1]

    def start(self: _Self) -> _Self:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is None:
            server = _QuietServer(("127.0.0.1", 0), self.handler_class)
            server.emulator = self  # type: ignore[attr-defined]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
