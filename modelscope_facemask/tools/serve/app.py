"""``create_app(settings, pipeline)``: the FastAPI application of ``facemask serve``.

Routes: ModelScope's ``/call``, ``/describe``, ``/health`` (:mod:`.routes_modelscope`); ours, ``/v1/embed``,
``/v1/verify``, ``/v1/identify`` (:mod:`.routes_v1`) and the gallery's (:mod:`.routes_gallery`); ``/healthz``
(alive), ``/readyz`` (model loaded and warmed up: 503 until then), ``/metrics`` (Prometheus text); ``/`` the web
console (:mod:`.console`). Middleware, outermost first: metrics, then the body-size and deadline limits.
"""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...version import __version__
from .api_errors import error_response, install_error_handlers
from .auth import READ
from .limits import BodyTooLarge, LimitsMiddleware
from .metrics import MetricsMiddleware
from .service import ServeState, state_of
from .settings import ServeSettings


def create_app(settings: ServeSettings, pipeline: Any, *, gallery: Any = None, on_ready: Any = None,
               make_batcher: Any = None) -> FastAPI:
    """The application serving ``pipeline`` (a loaded FaceMask pipeline) with ``settings``; ``gallery``: a
    :class:`~.gallery_service.GalleryService` or None; ``on_ready()`` is called once the model is warmed up;
    ``make_batcher``: the batcher class (default :class:`~.batcher.DynamicBatcher`; Ray Serve replicas pass
    :class:`~.ray_batcher.RayServeBatcher`)."""
    state = ServeState(settings, pipeline, gallery, **({"make_batcher": make_batcher} if make_batcher else {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        warming = app.state.warming = _start_warm_up(state, on_ready)
        try:
            yield
        finally:
            warming.cancel()
            await state.batcher.stop()
            state.decoder.close()

    app = FastAPI(title="modelscope-facemask", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.facemask = state
    install_error_handlers(app)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    from . import console, routes_gallery, routes_modelscope, routes_v1

    for module in (routes_modelscope, routes_v1, routes_gallery, console):
        app.include_router(module.router)
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    app.add_api_route("/readyz", _readyz, methods=["GET"])
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def _start_warm_up(state: ServeState, on_ready: Any) -> Any:
    import asyncio

    async def warm() -> None:
        try:
            await state.batcher.run_now(state.warm_up)
        except Exception as exc:  # noqa: BLE001 - stays not ready, says why
            from ...support.log import logger

            logger.error("warming up the model failed (%s: %s); /readyz stays 503", type(exc).__name__, exc)
            return
        state.ready = True
        if on_ready is not None:
            on_ready()

    return asyncio.get_running_loop().create_task(warm(), name="facemask-warm-up")


async def _body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return error_response(413, "body_too_large", str(exc))


async def _healthz() -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def _readyz(request: Request) -> JSONResponse:
    state = state_of(request)
    if not state.ready:
        return error_response(503, "not_ready", "the model is loading or warming up", {"Retry-After": "1"})
    return JSONResponse({"status": "ready", "device": str(getattr(state.pipeline, "device_used", "?")),
                         "precision": getattr(state.pipeline, "precision", None),
                         "engine": getattr(state.pipeline, "engine", None),
                         "gallery": str(state.gallery.path) if state.gallery is not None else None})


async def _metrics(request: Request) -> Response:
    state = state_of(request)
    state.require(request, READ)
    body, kind = state.metrics.text()
    return Response(body, media_type=kind)
