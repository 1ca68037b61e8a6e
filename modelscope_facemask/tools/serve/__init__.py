"""``facemask serve``: an HTTP service for embedding, verification, identification and enrolment, with dynamic
batching, on ModelScope's server conventions (``/call``, ``/describe``, ``/health``) and versioned routes of our own
(``/v1/...``). Needs the ``[serve]`` extra (FastAPI, uvicorn, prometheus-client, python-multipart).

Pieces: :mod:`.settings` (``ServeSettings``), :mod:`.app` (``create_app``), :mod:`.batcher` (the dynamic
batcher), :mod:`.server` (running it under uvicorn: ready line, graceful shutdown), :mod:`.gallery_service`
(gallery writes while serving), :mod:`.auth` (API keys), :mod:`.limits` and :mod:`.api_errors` (limits and the one
error shape), :mod:`.metrics`, :mod:`.image_inputs` and :mod:`.request_body` (what a request carries), the route
modules and :mod:`.console` (the web console's files). docs/serve.md documents the routes.
"""
from __future__ import annotations

from .settings import ServeSettings

__all__ = ["ServeSettings"]
