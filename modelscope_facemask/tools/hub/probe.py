"""Is the ModelScope hub reachable? One quick request, no retries, a hard time limit.

ModelScope's own client retries for about 35 s before it reports an unreachable hub; the examples and the demo
ask this module first, so that a user behind a firewall learns within seconds what is wrong and what to do.

The endpoint is the one ModelScope would use: ``MODELSCOPE_ENDPOINT``, else the deprecated ``MODELSCOPE_DOMAIN``
(``https://`` prepended), else the client's default (``modelscope_hub.constants.DEFAULT_ENDPOINT``,
``https://modelscope.cn`` in modelscope 1.40.2). The probe asks the legacy model-info API for the FaceMask model
(``GET {endpoint}/api/v1/models/damo/cv_resnet_face-recognition_facemask``); any JSON answer means the hub API is
there (a JSON 404 only says that this model is missing on that hub), anything else (DNS failure, refused
connection, timeout, TLS error, an HTML page from a proxy) means it is not.
"""
from __future__ import annotations

import os
import threading
from typing import NamedTuple
from urllib.parse import quote

from ...model_files.hub_endpoint import ENDPOINT_ENV, resolve_endpoint

FACEMASK_MODEL_ID = "damo/cv_resnet_face-recognition_facemask"
def _probe(url: str, timeout: float) -> tuple[bool, str]:
    import requests

    try:
        response = requests.get(url, timeout=(timeout, timeout), allow_redirects=True,
                                headers={"User-Agent": "modelscope-facemask-hub-probe", "Accept": "application/json"})
    except requests.exceptions.Timeout:
        return False, f"no answer within {timeout:g} s"
    except requests.exceptions.SSLError as exc:
        return False, f"TLS error ({_short(exc)})"
    except requests.exceptions.ProxyError as exc:
        return False, f"proxy error ({_short(exc)})"
    except requests.exceptions.ConnectionError as exc:
        return False, f"cannot connect ({_short(exc)})"
    except requests.exceptions.RequestException as exc:
        return False, f"{type(exc).__name__} ({_short(exc)})"
    try:
        response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content").split(";")[0]
        return False, (f"HTTP {response.status_code} with {kind}, not the ModelScope API "
                       "(a proxy, firewall or captive portal in between?)")
    if response.ok:
        return True, f"the hub API answered (HTTP {response.status_code})"
    if response.status_code == 404:
        return True, "the hub API answered, but it does not know the FaceMask model (HTTP 404)"
    return True, f"the hub API answered with HTTP {response.status_code}"


def _short(exc: BaseException) -> str:
    """The innermost, most telling part of a requests/urllib3 error message."""
    text = str(exc)
    for marker in ("Failed to resolve", "Connection refused", "Network is unreachable", "timed out",
                   "Name or service not known", "certificate verify failed", "No route to host"):
        if marker in text:
            return marker
    return text[:160]


def hub_reachable(endpoint: str | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the ModelScope hub API answers at ``endpoint`` (default: the one ModelScope would use), and why.

    One GET of the FaceMask model's info, no retries; returns within about ``timeout`` seconds even when name
    resolution hangs (the request runs in a daemon thread). The reason names the endpoint.
    """
    base = resolve_endpoint(endpoint)
    url = f"{base}/api/v1/models/{quote(FACEMASK_MODEL_ID)}"
    result: list[tuple[bool, str]] = []
    worker = threading.Thread(target=lambda: result.append(_probe(url, timeout)), daemon=True,
                              name="facemask-hub-probe")
    worker.start()
    worker.join(timeout + 0.5)
    ok, why = result[0] if result else (False, f"no answer within {timeout:g} s")
    return ok, f"{base}: {why}"


def offline_advice(model_id: str = FACEMASK_MODEL_ID, *, detector_id: str = "damo/cv_resnet50_face-detection_retinaface",
                   demo_command: str = "facemask demo") -> str:
    """What a user without hub access can do, as printed by the examples and the demo."""
    return (
        f"ModelScope needs its hub to download {model_id!r} and its face detector {detector_id!r}. Without it:\n"
        f"  * run `{demo_command}` (or `python examples/snippet.py --demo`) for an offline demo of the complete\n"
        "    pipeline on sample photos (real face detector, UNTRAINED recognizer: its similarities mean nothing);\n"
        "  * or use a local snapshot folder, `--model /path/to/snapshot`, made on a machine that reaches the hub:\n"
        f"      modelscope download {model_id} --local-dir /path/to/snapshot\n"
        f"      modelscope download {detector_id} --local-dir /path/to/snapshot/{detector_id}\n"
        "    (a detector folder at that place inside the snapshot is used without any hub call);\n"
        f"  * or point ModelScope at a reachable mirror: {ENDPOINT_ENV}=https://your-mirror."
    )


def offline_fix(model_id: str, option: str = "--model", *, detector_id: str | None = None) -> str:
    """What to do, in one sentence, when hub id ``model_id`` (for ``option``) cannot be downloaded here: the
    ``modelscope download`` command(s) to run where the hub answers, ending with the option to pass. ``detector_id``:
    the detector to download into the snapshot too (default: the FaceMask detector, for the FaceMask model only)."""
    if detector_id is None and model_id == FACEMASK_MODEL_ID and option == "--model":
        detector_id = "damo/cv_resnet50_face-detection_retinaface"
    detector = (f" and `modelscope download {detector_id} --local-dir DIR/{detector_id}` (its detector)"
                if detector_id else "")
    return (f"on a machine that reaches the hub, run `modelscope download {model_id} --local-dir DIR`{detector}, "
            f"copy DIR here and pass {option} DIR")


def looks_like_path(model: str) -> bool:
    """True when ``model`` can only be meant as a folder: not of the exact hub-id shape ``owner/name``
    (:func:`modelscope_facemask.model_files.model_folders.is_hub_id`, the one rule the loaders use)."""
    from ...model_files.model_folders import is_hub_id

    return not is_hub_id(model)


class ModelSourceProblem(NamedTuple):
    """Why a model argument cannot be used now; ``hub_unreachable`` tells whether offline options apply."""

    message: str
    hub_unreachable: bool
    reason: str = ""  # the probe's answer ("ENDPOINT: why"), for an unreachable hub


def hub_problem(model: str, timeout: float = 5.0) -> ModelSourceProblem | None:
    """None when ``model`` is a local folder (no hub call needed) or a hub id and the hub answers; otherwise what
    is wrong and, for an unreachable hub, what to do without it."""
    if os.path.isdir(os.path.expanduser(model)):
        return None
    if looks_like_path(model):
        return ModelSourceProblem(
            f"{model!r} is not a folder (and not a hub id of the form owner/name): pass the folder of a model "
            "snapshot that holds configuration.json and pytorch_model.pt.", False)
    ok, reason = hub_reachable(timeout=timeout)
    if ok:
        return None
    return ModelSourceProblem(f"The ModelScope hub is not reachable ({reason}).\n{offline_advice(model)}", True, reason)


__all__ = ["FACEMASK_MODEL_ID", "ModelSourceProblem", "default_endpoint", "hub_problem", "hub_reachable", "looks_like_path",
           "normalize_endpoint", "offline_advice", "offline_fix", "resolve_endpoint"]
