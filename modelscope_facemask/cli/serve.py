"""``facemask serve``: the HTTP service (extra ``[serve]``): embed, verify, identify and enrol over HTTP, with
dynamic batching, on ModelScope's server conventions. The work is in :mod:`modelscope_facemask.tools.serve`."""
from __future__ import annotations

import argparse
from typing import Any

from ..support.argument_types import non_negative_number, positive_number, positive_seconds
from .common import UsageError, add_command, add_model_options, positive_int, similarity_threshold

DESCRIPTION = """Serve the model over HTTP until SIGTERM or Ctrl-C.

Routes: POST /v1/embed, /v1/verify, /v1/identify; GET /v1/gallery, POST /v1/gallery/identities, DELETE
/v1/gallery/identities/{identity} (with --gallery); ModelScope's POST /call, GET /describe, GET /health;
GET /healthz, /readyz, /metrics (Prometheus) and / (the web console). docs/serve.md has a curl example for each.
Concurrent requests share pipeline batches (--max-batch, --max-wait-ms). A string image is always base64 bytes,
never a path; URLs only with --allow-urls. Prints "serving on http://HOST:PORT" once the model is warmed up.
SIGTERM stops accepting, answers every accepted request, then exits 0.
With --ray (extra [ray]) the same app runs on Ray Serve: --replicas N replicas on a local Ray instance or on the
cluster of --ray-address, batching with @serve.batch, enrolment through one gallery writer; the model and gallery
folders must be at the same path on every node.
Exit code 2 when the server cannot start (a bad option, model, gallery or key file, a port in use, the [serve]
extra missing)."""


def register(commands: Any) -> None:
    from ..tools.serve import settings as defaults

    parser = add_command(commands, "serve", help="serve the model over HTTP (extra [serve])", description=DESCRIPTION)
    add_model_options(parser)
    parser.add_argument("--gallery", default=None, metavar="G",
                        help="gallery folder for identify and enrolment (created by the first enrolment when it does "
                             "not exist); without it the gallery routes answer 409")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 is every "
                             "interface: your explicit choice)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-batch", type=positive_int, default=defaults.DEFAULT_MAX_BATCH, metavar="N",
                        help=f"images per pipeline batch at most (default {defaults.DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.DEFAULT_MAX_WAIT_MS, metavar="T",
                        help="how long a batch waits for more images while other requests are arriving (default "
                             f"{defaults.DEFAULT_MAX_WAIT_MS:g})")
    parser.add_argument("--queue-size", type=positive_int, default=defaults.DEFAULT_QUEUE_SIZE, metavar="N",
                        help=f"images waiting at most; beyond, 503 with Retry-After (default "
                             f"{defaults.DEFAULT_QUEUE_SIZE})")
    parser.add_argument("--api-key-file", default=None, metavar="F",
                        help="require API keys: one a line, `KEY` (read and write), `KEY read` or `KEY write`")
    parser.add_argument("--allow-urls", action="store_true",
                        help="also accept http(s) URLs as images (the server fetches them, within the download "
                             "deadline and size caps)")
    parser.add_argument("--max-body-mb", type=_megabytes, default=defaults.DEFAULT_MAX_BODY_BYTES / 2**20,
                        metavar="MB", help=f"largest request body (default {defaults.DEFAULT_MAX_BODY_BYTES // 2**20})")
    parser.add_argument("--max-pixels", type=positive_int, default=defaults.DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"largest image, width x height (default {defaults.DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--request-timeout-s", type=positive_seconds, default=defaults.DEFAULT_REQUEST_TIMEOUT_S,
                        metavar="S", help="time a request may take, body included (default "
                                          f"{defaults.DEFAULT_REQUEST_TIMEOUT_S:g})")
    parser.add_argument("--threshold", type=similarity_threshold, default=None, metavar="T",
                        help="verify/identify decision threshold (default: the uncalibrated placeholder; calibrate "
                             "with `facemask evaluate`)")
    parser.add_argument("--top-k", type=positive_int, default=defaults.DEFAULT_TOP_K, metavar="K",
                        help=f"identities per face in identify answers (default {defaults.DEFAULT_TOP_K})")
    ray = parser.add_argument_group("Ray Serve (extra [ray])")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve instead of one process")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="an existing Ray cluster (`auto`, HOST:6379 or ray://HOST:10001); default: a local Ray "
                          "instance started here")
    ray.add_argument("--replicas", type=positive_int, default=1, metavar="N", help="replicas (default 1)")
    ray.add_argument("--cpus-per-replica", type=positive_number, default=1.0, metavar="C",
                     help="CPUs Ray reserves per replica (default 1)")
    ray.add_argument("--gpus-per-replica", type=non_negative_number, default=0.0, metavar="G",
                     help="GPUs per replica (default 0; e.g. 1, or 0.5 to share one GPU between two)")
    parser.set_defaults(handler=run)


def _megabytes(text: str) -> float:
    """A finite number of MiB > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of MiB > 0, got {text!r}")
    return value


def _settings(args: argparse.Namespace) -> Any:
    from ..tools.serve.settings import ServeSettings

    return ServeSettings(model=args.model, detector=args.detector, gallery=args.gallery, host=args.host,
                         port=args.port, device=args.device, precision=args.precision, engine=args.engine,
                         max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                         max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels,
                         request_timeout_s=args.request_timeout_s, allow_urls=args.allow_urls,
                         api_key_file=args.api_key_file, threshold=args.threshold, top_k=args.top_k)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from .common import check_extras, open_pipeline, untrained_warning
    from .exit_codes import INTERRUPTED, SUCCESS

    extras = [("serve", "facemask serve")] + ([("gallery", "the face gallery")] if args.gallery else []) + \
        ([("ray", "facemask serve --ray")] if args.ray else [])
    check_extras(args, extras=extras)
    if not 0 <= args.port <= 65535 or args.max_wait_ms < 0:
        raise UsageError(f"--port must be 0..65535 and --max-wait-ms >= 0 (got {args.port}, {args.max_wait_ms:g})")
    from ..tools.serve.auth import ApiKeys
    from ..tools.serve.server import bind, serve_forever

    settings = _settings(args)
    if settings.api_key_file:
        ApiKeys.read(settings.api_key_file)  # a bad key file fails before the model loads
    try:
        sock = None if args.ray else bind(settings.host, settings.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); choose another "
                         "--port (0 picks a free one) or --host") from None
    if args.ray:
        return _run_on_ray(args, settings)
    pipeline = open_pipeline(args)
    untrained_warning(pipeline)
    gallery = None
    if settings.gallery:
        from ..tools.gallery.face_gallery import GalleryModel
        from ..tools.serve.gallery_service import GalleryService

        name = os.path.abspath(args.model) if os.path.isdir(args.model) else args.model
        gallery = GalleryService(settings.gallery, GalleryModel.of_pipeline(pipeline, name))
    from ..tools.serve.app import create_app

    stopped_by = serve_forever(lambda on_ready: create_app(settings, pipeline, gallery=gallery, on_ready=on_ready),
                               sock, log_level="info" if args.verbose else "warning")
    return INTERRUPTED if stopped_by == signal.SIGINT else SUCCESS


def _run_on_ray(args: argparse.Namespace, settings: Any) -> int:
    """``--ray``: the model resolved here, then loaded by every replica (the folders at the same path on each node)."""
    import signal

    from ..support.extras import require
    from .common import pipeline_options

    require("ray.serve", "ray", "facemask serve --ray")
    from ..tools.serve.ray_deployment import run_on_ray

    from .exit_codes import INTERRUPTED, SUCCESS

    stopped_by = run_on_ray(settings, pipeline_options(args), address=args.ray_address, replicas=args.replicas,
                            cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
                            announce=lambda line: print(line, flush=True))
    return INTERRUPTED if stopped_by == signal.SIGINT else SUCCESS
