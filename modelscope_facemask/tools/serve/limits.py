"""Request limits as ASGI middleware: the body size (refused from its ``Content-Length`` before a byte is read,
and counted while it streams in) and the per-request deadline (a body that never finishes, or an answer that takes
too long). Each answers in the one error shape: 413 ``body_too_large``, 408 ``request_timeout`` (the body was not
received in time), 503 ``timeout`` (received, but not answered in time)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from .api_errors import error_body


class BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes the limit; answered 413."""


async def send_error(send: Any, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _too_large_message(limit: int) -> str:
    return (f"the request body is over the server's limit of {limit:,} bytes; send fewer or smaller images (the "
            "server's operator can raise --max-body-mb)")


class LimitsMiddleware:
    """Body-size cap and per-request deadline for every HTTP request."""

    def __init__(self, app: Any, *, max_body_bytes: int, timeout_s: float) -> None:
        self.app, self.max_body_bytes, self.timeout_s = app, max_body_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body_bytes
            except ValueError:
                await send_error(send, 400, "bad_request", "the Content-Length header is not a number")
                return
            if too_large:
                await send_error(send, 413, "body_too_large", _too_large_message(self.max_body_bytes))
                return
        no_body = declared in (None, b"0") and b"transfer-encoding" not in headers
        state = {"received": 0, "complete": no_body, "started": False}

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    raise BodyTooLarge(_too_large_message(self.max_body_bytes))
                state["complete"] = not message.get("more_body", False)
            return message

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receiving, sending), self.timeout_s)
        except asyncio.TimeoutError:
            if state["started"]:
                return
            if not state["complete"]:
                await send_error(send, 408, "request_timeout",
                                 f"the request body was not received within {self.timeout_s:g} s; send it whole "
                                 "(the server's operator can raise --request-timeout-s)")
            else:
                await send_error(send, 503, "timeout", f"the request was not answered within {self.timeout_s:g} s "
                                                       "(the server is busy); retry later",
                                 {"Retry-After": "1"})
