"""Model folders from local paths or hub ids (through ModelScope's own client and cache).

A string is a hub id only when it has the exact shape ``owner/name`` (letters, digits, ``.``, ``_``, ``-``; no
``..``) **and** is not an existing local path: ``models/facemask`` is the local folder when it exists, else a hub
id. Anything else (``./x``, ``/abs``, ``~/x``, ``C:\\x``, ``a/b/c``) is a local path and, when missing, is
reported as a missing folder at once, without contacting the hub.

One more rule, checked first: a string starting with ``hf://`` is a Hugging Face Hub reference
``hf://OWNER/NAME[@REVISION]``, fetched into huggingface_hub's cache and verified against its ``manifest.json``
(:func:`hf_model_dir`); a local folder is never spelled that way.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import HubDownloadError, ModelSourceError
from ..support.log import logger
from .hub_endpoint import resolve_endpoint

HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
#: what ModelScope's downloader leaves next to a file it has not finished (resumed on the next online call)
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")


def is_hub_id(text: str | os.PathLike) -> bool:
    """True when ``text`` has the shape of a hub id ``owner/name`` (whether or not it exists on the hub)."""
    value = os.fspath(text)
    return isinstance(value, str) and HUB_ID_PATTERN.fullmatch(value) is not None and ".." not in value


def partial_files(folder: str | os.PathLike) -> list[Path]:
    """Files an interrupted ModelScope download left in ``folder`` (``*.incomplete``, ``*.parallel_tmp``)."""
    return sorted(p for p in Path(folder).rglob("*") if p.name.endswith(PARTIAL_SUFFIXES) and p.is_file())


def check_complete(folder: str | os.PathLike, what: str = "model") -> None:
    """Raise :class:`ModelSourceError` when ``folder`` holds files of an unfinished download."""
    partial = partial_files(folder)
    if partial:
        names = ", ".join(p.relative_to(folder).as_posix() for p in partial[:3])
        raise ModelSourceError(
            f"{what} folder {str(folder)!r} is an incomplete download ({names} unfinished): run "
            "modelscope's snapshot_download for it again with the hub reachable (it resumes and verifies every "
            "file), or delete the folder and download it again")


def local_model_dir(model_name_or_path: str | os.PathLike, revision: str | None = None, *,
                    prefer_cache: bool = False, what: str = "model") -> str:
    """``model_name_or_path`` if it is a local folder, else ModelScope's snapshot of that hub id.

    A path that does not exist raises :class:`ModelSourceError` without any hub call; a hub failure raises
    :class:`HubDownloadError` naming the id, the endpoint and the cause. With ``prefer_cache=True`` a complete
    snapshot already in ModelScope's cache is used without contacting the hub (used for the detector a model card
    names, so that a model loaded from a local folder works offline).
    """
    path = os.fspath(model_name_or_path)
    if isinstance(path, str) and path.startswith("hf://"):
        return hf_model_dir(path, what=what)
    if not isinstance(path, str) or not path.strip():
        raise ModelSourceError(f"{what} must be a local folder or a hub id 'owner/name', got {path!r}")
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        check_complete(expanded, what)
        return expanded
    if os.path.exists(expanded):
        raise ModelSourceError(f"{what} {path!r} is a file, not a model folder: pass the folder that holds "
                               "configuration.json and the weights")
    if not is_hub_id(path):
        raise ModelSourceError(
            f"{what} folder {path!r} does not exist ({os.path.abspath(expanded)!r}); it is not a hub id of the form "
            "'owner/name' either: check the path, or download the model first "
            "(modelscope download OWNER/NAME --local-dir FOLDER)")
    return hub_snapshot(path, revision, prefer_cache=prefer_cache, what=what)


def hf_model_dir(reference: str, *, what: str = "model") -> str:
    """The local snapshot folder of ``hf://OWNER/NAME[@REVISION]``, for ``pipeline(Tasks.face_recognition, folder)``.

    Downloaded into huggingface_hub's cache (``HF_HUB_OFFLINE=1``: the cache only), then every file is checked
    against the repository's ``manifest.json``. The detector folder a packed repository holds is part of the
    snapshot, so nothing else is fetched. Raises :class:`ModelSourceError` for a malformed reference,
    :class:`HubDownloadError` when the hub or the cache cannot provide it, and
    :class:`~modelscope_facemask.errors.CheckpointError` for a file that differs from the manifest.
    """
    from .huggingface_download import hf_snapshot

    return hf_snapshot(reference, what=what)


def hub_snapshot(model_id: str, revision: str | None = None, *, prefer_cache: bool = False, what: str = "model") -> str:
    """ModelScope's verified snapshot folder of hub id ``model_id``; :class:`HubDownloadError` on failure."""
    from modelscope.hub.snapshot_download import snapshot_download

    kwargs = {"revision": revision} if revision else {}
    if prefer_cache:
        try:
            folder = snapshot_download(model_id, local_files_only=True, **kwargs)
            check_complete(folder, what)
            return folder
        except Exception as exc:  # not cached, or cached incompletely (ModelScope raises CacheNotFound, ValueError)
            logger.debug("%s not (completely) in the ModelScope cache (%s); downloading", model_id, exc)
    try:
        return snapshot_download(model_id, **kwargs)
    except Exception as exc:  # ModelScope's client raises HTTPError, HubError subclasses, ValueError, OSError
        raise HubDownloadError(describe_hub_failure(model_id, exc, what)) from exc


def describe_hub_failure(model_id: str, exc: BaseException, what: str = "model") -> str:
    """One message naming the hub id, the endpoint and the cause of a failed ``snapshot_download``."""
    endpoint = resolve_endpoint()
    status = _status_code(exc)
    cause = _first_line(exc)
    name = type(exc).__name__
    if status == 404 or name == "NotExistError":
        return (f"{what} {model_id!r} does not exist on the ModelScope hub at {endpoint} (HTTP 404): check the id "
                "(owner/name, as on the model's hub page), or pass a local folder")
    if name in ("FileDownloadError", "FileIntegrityError", "FileSizeMismatchError"):
        failed = getattr(exc, "failed_files", None) or {}
        details = "; ".join(f"{path}: {type(err).__name__}: {_first_line(err)}" for path, err in list(failed.items())[:3]) or cause
        return (f"downloading {what} {model_id!r} from {endpoint} failed ({details}). ModelScope keeps no unverified "
                "file under its final name: run the same call again when the hub is healthy (it resumes and verifies "
                "every file); a snapshot folder this failure left behind is incomplete and is refused by this package")
    if status is not None:
        return f"the ModelScope hub at {endpoint} answered HTTP {status} for {what} {model_id!r}: {cause}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or name in ("NetworkError", "RequestTimeoutError",
                                                                    "ConnectionError", "Timeout"):
        return (f"cannot reach the ModelScope hub at {endpoint} for {what} {model_id!r} ({cause}); without the hub, "
                "pass a local snapshot folder instead of the hub id")
    return f"cannot download {what} {model_id!r} from the ModelScope hub at {endpoint}: {name}: {cause}"


def _status_code(exc: BaseException) -> int | None:
    for candidate in (getattr(exc, "status_code", None), getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(candidate, int):
            return candidate
    return None


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
