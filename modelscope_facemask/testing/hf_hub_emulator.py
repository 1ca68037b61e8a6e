"""A loopback emulator of the Hugging Face Hub, for tests and offline demos (like :mod:`.hub_emulator` for ModelScope).

It serves, on ``127.0.0.1`` and a free port, the endpoints that ``huggingface_hub`` 2.4.0 calls (with
``HF_HUB_DISABLE_XET=1``: the plain LFS path) to create a model repository, upload a folder, list it and download it:

Write side (``HfApi.create_repo`` + ``HfApi.upload_folder`` -> ``create_commit``)
  ``POST /api/repos/create``                                  ``{"url"}``; an existing repository answers HTTP 409
                                                              with ``{"error", "url"}`` (``exist_ok`` reads the url)
  ``POST /api/models/{o}/{n}/preupload/{rev}``                ``uploadMode`` per file: ``lfs`` when larger than
                                                              10 MB or a binary suffix (``.pt``, ``.safetensors``...),
                                                              else ``regular``; ``oid`` of the file already there
  ``POST /{o}/{n}.git/info/lfs/objects/batch``                git-lfs batch (basic transfer): an ``upload`` and a
                                                              ``verify`` action per blob the hub lacks, none otherwise
  ``PUT /lfs-upload/{oid}``                                   the blob; its sha256 and size are checked
  ``POST /{o}/{n}.git/info/lfs/objects/verify``               ``{"oid", "size"}`` of an uploaded blob
  ``POST /api/models/{o}/{n}/commit/{rev}``                   NDJSON: ``header``, ``file`` (base64), ``lfsFile``,
                                                              ``deletedFile``/``deletedFolder``
Read side (``model_info``, ``list_repo_tree``, ``get_paths_info``, ``snapshot_download``, ``hf_hub_download``)
  ``GET /api/models/{o}/{n}[/revision/{rev}]``                model info with ``sha``, ``private``, ``siblings``
  ``GET /api/models/{o}/{n}/tree/{rev}[/{path}]``             ``?recursive=&expand=``; entries with ``oid``, ``size``
                                                              and ``lfs: {oid (sha256), size, pointerSize}``
  ``POST /api/models/{o}/{n}/paths-info/{rev}``               the same entries for the ``paths`` asked
  ``HEAD|GET /{o}/{n}/resolve/{rev}/{path}``                  regular file: 200, ``ETag`` = git blob sha1,
                                                              ``X-Repo-Commit``; LFS file: 302 to the "CDN" with
                                                              ``X-Linked-Etag`` (sha256), ``X-Linked-Size``,
                                                              ``X-Repo-Commit``, like the real hub
  ``GET http://localhost:{port}/lfs-cdn/{oid}``               the "CDN": another host name (``localhost``), so the
                                                              client treats it as off-hub and sends no token there
  ``GET /api/whoami-v2``                                      the token's user (``HfApi.whoami``)
  ``POST /api/validate-yaml``                                 ``upload_folder`` checks README.md's metadata here
                                                              (:func:`validate_card_metadata`)

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and a JSON ``{"error"}``
body, which the client maps to its exception types. Only the revision ``main`` exists (and every commit sha of
it). With ``token=...`` every write, and every read of a private repository, needs ``Authorization: Bearer
<token>``; a private repository is invisible (404) without it, as on the real hub.

Faults: :meth:`HfHubEmulator.tamper_file` serves other bytes for a file while its listing, ETag and sizes stay as
committed (a corrupted CDN or mirror); :meth:`HfHubEmulator.fail_requests` answers matching requests with an
HTTP status. :attr:`HfHubEmulator.requests` records every request as (method, path template).

The pieces: :mod:`.hf_hub_storage` (the repositories and LFS blobs) and :mod:`.hf_hub_routes` (the HTTP request
handler, and the model-card check of ``validate-yaml``); here: the emulator's life cycle and faults.
"""
from __future__ import annotations

import os
import re
from typing import Any

from .hf_hub_routes import HfHandler, HfRequest
from .hf_hub_routes import LFS_SUFFIXES, LFS_THRESHOLD, PIPELINE_TAGS, validate_card_metadata  # noqa: F401
from .hf_hub_storage import HfStorage
from .hf_hub_storage import MAIN, POINTER_SIZE, HfRepo, git_blob_sha1  # noqa: F401  (re-exported, as above)
from .loopback_server import LoopbackServer


class HfHubEmulator(HfStorage, LoopbackServer):
    """The emulator; use as a context manager, or :meth:`start` / :meth:`stop`."""

    thread_name = "hf-hub-emulator"
    handler_class = HfHandler

    def __init__(self, *, token: str | None = None, user: str = "facemask-test") -> None:
        super().__init__(user)
        self.token = token
        self.requests: list[HfRequest] = []
        self.tampered: dict[tuple[str, str], bytes] = {}
        self.faults: list[tuple[str | None, re.Pattern[str], int, bool]] = []

    # -- life cycle -------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        """The "CDN" LFS downloads are redirected to: the same server under another host name."""
        return f"http://localhost:{self.port}"

    # -- faults ----------------------------------------------------------------------------------------------
    def tamper_file(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve ``data`` for ``path`` from now on; listing, ETag and announced sizes stay as committed."""
        self.tampered[(repo_id, path)] = data

    def fail_requests(self, pattern: str, *, status: int = 500, method: str | None = None,
                      echo_headers: bool = False) -> None:
        """Answer requests whose path matches ``pattern`` (and ``method``, when given) with HTTP ``status``;
        ``echo_headers``: the error message repeats the request's headers (Authorization included), as a badly
        behaved proxy would."""
        self.faults.append((method, re.compile(pattern), status, echo_headers))

    def clear_faults(self) -> None:
        """Remove every fault: tampered files and failing requests."""
        self.tampered.clear()
        self.faults.clear()

    def request_templates(self) -> list[str]:
        """``"METHOD template"`` of every request so far, in order."""
        return [f"{r.method} {r.template}" for r in self.requests]


def hf_environment(emulator: HfHubEmulator, cache_dir: str | os.PathLike[str],
                   token: str | None = None) -> dict[str, str]:
    """Environment variables pointing ``huggingface_hub`` at ``emulator`` with its cache in ``cache_dir``.

    ``huggingface_hub.constants`` reads them at import time: set them before it is imported (a fresh subprocess),
    or in-process patch :mod:`huggingface_hub.constants` as :func:`patch_hf_constants` does.
    """
    env = {"HF_ENDPOINT": emulator.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "5",
           "HF_HUB_CACHE": os.fspath(cache_dir), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0"}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def patch_hf_constants(monkeypatch: Any, env: dict[str, str]) -> None:
    """Apply :func:`hf_environment` to an already imported ``huggingface_hub`` (pytest ``monkeypatch``)."""
    from huggingface_hub import constants

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "ENDPOINT", env["HF_ENDPOINT"])
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        env["HF_ENDPOINT"] + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", int(env["HF_HUB_ETAG_TIMEOUT"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE") == "1")

