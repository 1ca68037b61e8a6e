"""A loopback emulator of the ModelScope hub, for tests and offline demos.

It serves, on ``127.0.0.1`` and a free port, exactly the endpoints that ModelScope 1.40.2 (through
``modelscope_hub``) calls to resolve, download and publish a model repository:

Read side
  ``GET /openapi/v1/models/{o}/{n}``                       model info (``{"success", "data"}`` envelope)
  ``GET /api/v1/models/{o}/{n}``                            legacy model info (the client's fallback after an
                                                            OpenAPI 404)
  ``GET /api/v1/repos/internalAccelerationInfo``            always 404 (no intra-cloud region)
  ``GET|HEAD /api/v1/models/{o}/{n}/repo?Revision=&FilePath=``  raw bytes, Content-Length, single ``Range``
  ``GET /api/v1/models/{o}/{n}/repo/files?Revision=&Recursive=[&Root=]``
                                                            ``{"Code":200,"Data":{"Files":[{Path,Name,Type,Size,Sha256}]}}``
Write side (``HubApi.upload_folder`` / ``push_model`` / ``create_repo``)
  ``POST /api/v1/models``                                   create; an existing repo answers HTTP 400 with business
                                                            code 10010101001, which the client maps to
                                                            ``AlreadyExistsError`` ("already exists" is accepted)
  ``POST /api/v1/repos/models/{o}/{n}/info/lfs/objects/batch``  git-lfs batch: ``actions.upload.href`` per missing oid
  ``PUT <href>``                                            the blob; its sha256 and size are verified
  ``POST /api/v1/repos/models/{o}/{n}/commit/{rev}``        ``actions`` with inline base64 or LFS pointers
  ``POST /api/v1/login``, ``GET /openapi/v1/users/me``      only so that ``HubApi().login(token)`` works

Faults, for tests of error handling (each matches requests by method and a regular expression on the path; a
``times`` limit makes a fault transient; :attr:`HubEmulator.fault_hits` counts the requests each fault answered):
  :meth:`HubEmulator.fail_requests`    an HTTP status (default 500) with a JSON error body
  :meth:`HubEmulator.truncate_file`    a file download announces its full ``Content-Length`` but the connection is
                                       closed after ``keep_bytes`` bytes
  :meth:`HubEmulator.corrupt_listing`  the file listing reports a wrong ``Sha256`` (and/or ``Size``) for a file
  :meth:`HubEmulator.clear_faults`     a healthy hub again

Repositories live as plain folders ``root/<owner>/<name>/<files>``; only the revision ``master`` exists. With
``token=...`` every write (and ``users/me``) needs that token as ``Authorization: Bearer`` or the ``m_session_id``
cookie (the client sends both); reads stay anonymous. Anything else is answered with a JSON 404 naming the request.

The pieces: :mod:`.hub_storage` (the repositories, LFS blobs and commits) and :mod:`.hub_routes` (the HTTP request
handler); here: the emulator's life cycle, faults, token check and request log.

When ModelScope reads its settings (measured on modelscope 1.40.2 / modelscope_hub 0.5.1):
  * ``MODELSCOPE_ENDPOINT``, ``MODELSCOPE_CACHE``, ``MODELSCOPE_HOME`` and ``MODELSCOPE_API_TOKEN`` are read by
    ``modelscope_hub.config.HubConfig`` when the process-wide default config is first created, which happens lazily
    on the first hub call (``HubApi()``, ``snapshot_download``, ``pipeline('owner/name')``), *not* at import time
    (unless ``MODELSCOPE_CREDENTIALS_PATH`` is set, which makes ``import modelscope.hub`` create it). After that the
    singleton is reused and later changes of ``os.environ`` are ignored.
  * So either set :func:`hub_environment` in a fresh subprocess, or, in-process, set it (e.g. with
    ``monkeypatch.setenv``) and call :func:`reset_hub_config` before and after the test.
  * ``MODELSCOPE_DOWNLOAD_INTRA_CLOUD`` is read per download; ``false`` skips the region probe
    (``internalAccelerationInfo``). ``pipeline()``'s trust check (``is_model_from_trusted_source``) is
    ``lru_cache``-d per model id for the life of the process.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .hub_routes import HubHandler
from .hub_storage import ALREADY_EXISTS_CODE, DEFAULT_REVISION, HubCommit, HubStorage  # noqa: F401  (re-exported)
from .hub_storage import repo_file_path
from .loopback_server import LoopbackServer


class HubRequest(NamedTuple):
    """One request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class HubFault:
    """One injected fault: ``kind`` is ``status``, ``truncate`` or ``listing``; ``times`` = None for always."""

    kind: str
    method: str | None
    pattern: re.Pattern[str]
    times: int | None
    status: int = 500
    file_path: str | None = None
    keep_bytes: int | None = None
    sha256: str | None = None
    size: int | None = None
    hits: int = 0


class HubEmulator(HubStorage, LoopbackServer):
    """Loopback ModelScope hub; use as a context manager (``with HubEmulator() as hub: hub.endpoint``)."""

    thread_name = "hub-emulator"
    handler_class = HubHandler

    def __init__(self, root: str | os.PathLike[str] | None = None, *, token: str | None = None,
                 username: str = "facemask-tester") -> None:
        super().__init__(root)
        self.token = token
        self.username = username
        self.requests: list[HubRequest] = []
        self._log_lock = threading.Lock()
        self._faults: list[HubFault] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Shut the server down; a temporary root is deleted."""
        super().stop()
        self._remove_own_root()

    # ------------------------------------------------------------------ faults
    def fail_requests(self, pattern: str, *, status: int = 500, method: str | None = None,
                      times: int | None = None) -> HubFault:
        """Answer requests whose path matches the regular expression ``pattern`` (``re.search``; ``method`` None =
        any) with HTTP ``status`` and a JSON error body, the first ``times`` times (None = always)."""
        return self._add_fault(HubFault("status", method, re.compile(pattern), times, status=status))

    def truncate_file(self, repo_id: str, file_path: str, *, keep_bytes: int | None = None,
                      times: int | None = None) -> HubFault:
        """Downloads of ``file_path`` in ``repo_id`` (GET, also ranged) send the full ``Content-Length`` but only
        ``keep_bytes`` bytes of the body (default: half) and then close the connection."""
        pattern = re.compile(rf"^/api/v1/models/{re.escape(repo_id)}/repo$")
        return self._add_fault(HubFault("truncate", "GET", pattern, times, file_path=repo_file_path(file_path),
                                        keep_bytes=keep_bytes))

    def corrupt_listing(self, repo_id: str, file_path: str, *, sha256: str | None = "0" * 64,
                        size: int | None = None, times: int | None = None) -> HubFault:
        """The file listing of ``repo_id`` reports ``sha256`` (default: 64 zeros) and, when given, ``size`` for
        ``file_path`` instead of the true values; the file itself is served unchanged."""
        pattern = re.compile(rf"^/api/v1/models/{re.escape(repo_id)}/repo/files$")
        return self._add_fault(HubFault("listing", "GET", pattern, times, file_path=repo_file_path(file_path),
                                        sha256=sha256, size=size))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._log_lock:
            self._faults.clear()

    @property
    def fault_hits(self) -> list[int]:
        """How many requests each injected fault answered, in the order they were added."""
        with self._log_lock:
            return [f.hits for f in self._faults]

    def _add_fault(self, fault: HubFault) -> HubFault:
        with self._log_lock:
            self._faults.append(fault)
        return fault

    def _take_fault(self, kind: str, method: str, path: str, target: str | None = None) -> HubFault | None:
        """The first active fault of ``kind`` matching the request (its budget is used up by one)."""
        with self._log_lock:
            for fault in self._faults:
                if fault.kind != kind or (fault.method is not None and fault.method != method):
                    continue
                if not fault.pattern.search(path) or (fault.times is not None and fault.hits >= fault.times):
                    continue
                if fault.file_path is not None and fault.file_path != target:
                    continue
                fault.hits += 1
                return fault
        return None

    def _authorized(self, headers: Any) -> bool:
        if self.token is None:
            return True
        if headers.get("Authorization", "") == f"Bearer {self.token}":
            return True
        cookies = headers.get("Cookie", "")
        return any(c.strip() == f"m_session_id={self.token}" for c in cookies.split(";"))

    def _log(self, method: str, path: str, query: dict[str, str]) -> None:
        with self._log_lock:
            self.requests.append(HubRequest(method, path, query))


def hub_environment(emulator: HubEmulator, cache_dir: str | os.PathLike[str],
                    home_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Environment variables that point ModelScope at ``emulator`` with an isolated cache and home.

    Set them before the process's first hub call (or call :func:`reset_hub_config` after setting them).
    """
    env = {
        "MODELSCOPE_ENDPOINT": emulator.endpoint,
        "MODELSCOPE_CACHE": str(Path(cache_dir).resolve()),
        "MODELSCOPE_HOME": str(Path(home_dir).resolve()),
        "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
    }
    if emulator.token is not None:
        env["MODELSCOPE_API_TOKEN"] = emulator.token
    return env


def reset_hub_config() -> None:
    """Drop ``modelscope_hub``'s cached process-wide config so the next hub call re-reads the environment."""
    from modelscope_hub import set_default_config

    set_default_config(None)

