"""``facemask serve --ray``: the same FastAPI app on Ray Serve, past one machine.

:func:`build_application` makes two deployments: ``FaceMaskServer`` (``replicas`` replicas, each loading the
pipeline and serving :func:`~.app.create_app`'s app through ``@serve.ingress``, batching with ``@serve.batch``:
:class:`~.ray_batcher.RayServeBatcher`) and, with a gallery, ``FaceMaskGalleryWriter`` (one replica: every
enrolment and deletion goes through it; :mod:`.ray_gallery`). Every answer carries ``X-FaceMask-Replica``.
:func:`run_on_ray` connects to a cluster (or starts a local Ray), runs the application behind Ray Serve's HTTP proxy
on ``host:port``, prints ``serving on URL`` once every replica is warmed up, and on SIGTERM or Ctrl-C shuts Serve
down (Ray Serve drains the replicas) and returns the signal.

The model folder (``pipeline_options["model"]``) and the gallery folder must exist at the same path on every node
that runs a replica (a shared file system, or the same copy on each node).
"""
from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any, Callable

from .settings import ServeSettings

APP_NAME = "facemask"
REPLICA_HEADER = "X-FaceMask-Replica"
#: seconds to wait for every replica to load the model and warm up
START_TIMEOUT_S = 900.0


def build_application(settings: ServeSettings, pipeline_options: dict[str, Any], *, replicas: int = 1,
                      cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0) -> Any:
    """The bound Ray Serve application (``FaceMaskServer``, plus the gallery writer when ``settings.gallery``)."""
    from ray import serve

    @serve.deployment(name="FaceMaskServer", num_replicas=replicas, max_ongoing_requests=settings.queue_size,
                      ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
                      health_check_period_s=5.0)
    @serve.ingress()
    class FaceMaskServer:
        def __init__(self, writer: Any = None) -> None:
            self._app = _replica_app(settings, pipeline_options, writer)

        def __serve_build_asgi_app__(self) -> Any:
            return self._app

        def check_health(self) -> None:
            """Ray Serve restarts a replica whose warm-up failed."""
            state = self._app.state.facemask
            warming = getattr(self._app.state, "warming", None)
            if not state.ready and warming is not None and warming.done():
                raise RuntimeError("the model failed to warm up on this replica (see its log)")

    if not settings.gallery:
        return FaceMaskServer.bind()
    from .ray_gallery import GalleryWriter

    writer = serve.deployment(name="FaceMaskGalleryWriter", num_replicas=1,
                              ray_actor_options={"num_cpus": 0})(GalleryWriter)
    return FaceMaskServer.bind(writer.bind(settings.gallery))


def _replica_app(settings: ServeSettings, pipeline_options: dict[str, Any], writer: Any) -> Any:
    """On a replica: load the pipeline, then the app with Ray Serve batching and the remote gallery writer."""
    import os

    from ray import serve

    from ...modelscope_adapters.pipeline import FaceMaskPipeline
    from .app import create_app
    from .ray_batcher import RayServeBatcher

    pipeline = FaceMaskPipeline(**pipeline_options)
    gallery = None
    if settings.gallery:
        from ..gallery.face_gallery import GalleryModel
        from .ray_gallery import RemoteGalleryService

        model = pipeline_options["model"]
        name = os.path.abspath(model) if os.path.isdir(model) else model
        gallery = RemoteGalleryService(settings.gallery, GalleryModel.of_pipeline(pipeline, name), writer)
    app = create_app(settings, pipeline, gallery=gallery, make_batcher=RayServeBatcher)
    replica = serve.get_replica_context().replica_id.unique_id

    @app.middleware("http")
    async def name_the_replica(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers[REPLICA_HEADER] = replica
        return response

    return app


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (for ``--port 0``: Ray Serve's proxy binds it itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_on_ray(settings: ServeSettings, pipeline_options: dict[str, Any], *, address: str | None = None,
               replicas: int = 1, cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0,
               announce: Callable[[str], None] = print) -> int:
    """Serve on Ray until SIGTERM or SIGINT; returns that signal. ``address``: an existing cluster (``auto``,
    ``ray://HOST:10001``, ``HOST:6379``), None: a local Ray instance started here."""
    import ray
    from ray import serve

    port = settings.port or free_port(settings.host)
    local = {} if address else {"include_dashboard": False}  # a cluster's own settings are kept as they are
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **local)
    stop = threading.Event()
    caught: list[int] = []

    def on_signal(sig: int, frame: Any) -> None:
        caught.append(sig)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": settings.host, "port": port})
        application = build_application(settings, pipeline_options, replicas=replicas,
                                         cpus_per_replica=cpus_per_replica, gpus_per_replica=gpus_per_replica)
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        _wait_ready(settings.host, port, replicas, stop)
        if not stop.is_set():
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            announce(f"serving on http://{host}:{port} (Ray Serve, {replicas} replica(s))")
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return caught[0] if caught else signal.SIGTERM


def _wait_ready(host: str, port: int, replicas: int, stop: threading.Event) -> None:
    """Until ``/readyz`` answers 200 from ``replicas`` distinct replicas (or a signal arrives)."""
    import requests

    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/readyz"
    seen: set[str] = set()
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(seen) < replicas and not stop.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray Serve replicas not ready after {START_TIMEOUT_S:g} s ({len(seen)} of "
                               f"{replicas} answered /readyz)")
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200:
                seen.add(response.headers.get(REPLICA_HEADER, ""))
                continue
        except requests.RequestException:
            pass
        stop.wait(0.5)
