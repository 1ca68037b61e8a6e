"""Every error the server answers has one shape, ``{"error": {"code", "message"}}``, and a 4xx status (503 for a
full queue or an overrun deadline): :class:`ApiError` and the handlers that turn FastAPI's and Starlette's own
errors (validation, 404/405, a client gone mid-upload) into it. No traceback ever reaches a client."""
from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ...errors import FaceMaskError
from ...support.log import logger

#: the status of each HTTP status code Starlette raises itself, as our error code
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "body_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
               503: "unavailable"}


class ApiError(Exception):
    """An answer that is an error: HTTP ``status``, machine-readable ``code``, a ``message`` naming the input and
    the fix, optional extra response ``headers`` (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code if 400 <= exc.status_code < 600 else 400
    code = _HTTP_CODES.get(status, "bad_request")
    if status == 404:
        message = f"no route {request.method} {request.url.path}; see GET /describe and docs/serve.md"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see docs/serve.md for its method"
    else:
        message = str(exc.detail)
    return error_response(status, code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = getattr(exc, "errors", lambda: [])()
    where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5])
    return error_response(422, "invalid_request", f"the request does not match the route's fields ({where}); see "
                                                  "docs/serve.md")


async def _client_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
    logger.info("client disconnected before sending its whole request to %s", request.url.path)
    return error_response(400, "client_disconnected", "the client closed the connection before the request body "
                                                      "was complete")


async def _facemask_error(request: Request, exc: FaceMaskError) -> JSONResponse:
    return error_response(422, "invalid_input", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected %s answering %s %s: %s", type(exc).__name__, request.method, request.url.path, exc,
                 exc_info=exc)
    return error_response(400, "request_failed", f"the request could not be answered ({type(exc).__name__}); the "
                                                 "server logged the details")


def install_error_handlers(app: Any) -> None:
    """Our shape for every error of ``app`` (a FastAPI application)."""
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(FaceMaskError, _facemask_error)
    app.add_exception_handler(Exception, _unexpected)
