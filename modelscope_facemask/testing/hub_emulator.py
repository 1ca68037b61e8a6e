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

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..model_files.assets import sha256_file
from .loopback_server import LoopbackServer

DEFAULT_REVISION = "master"
#: what the China site answers when a repository name is taken (mapped to AlreadyExistsError by the client)
ALREADY_EXISTS_CODE = 10010101001
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BLOB_DIR = ".lfs-objects"
_CHUNK = 1 << 20


class HubRequest(NamedTuple):
    """One request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class HubCommit:
    """One accepted commit: which files it touched and how (``normal`` = inline base64, ``lfs`` = pointer)."""

    repo_id: str
    revision: str
    message: str
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (action, path, type)


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


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = status if code is None else code


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value or "") or ".." in value:
        raise _HubError(400, f"invalid {what} {value!r}")
    return value


def _repo_file_path(value: str) -> str:
    """Normalise a repository file path; reject absolute paths and ``..``."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not parts or value.startswith("/") or ".." in parts:
        raise _HubError(400, f"invalid file path {value!r}")
    return "/".join(parts)


class HubEmulator(LoopbackServer):
    """Loopback ModelScope hub; use as a context manager (``with HubEmulator() as hub: hub.endpoint``)."""

    thread_name = "hub-emulator"

    def __init__(self, root: str | os.PathLike[str] | None = None, *, token: str | None = None,
                 username: str = "facemask-tester") -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hub-emulator-") if root is None else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.username = username
        self.requests: list[HubRequest] = []
        self.commits: list[HubCommit] = []
        self._log_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._meta: dict[str, dict[str, Any]] = {}
        self._faults: list[HubFault] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Shut the server down; a temporary root is deleted."""
        super().stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

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
        return self._add_fault(HubFault("truncate", "GET", pattern, times, file_path=_repo_file_path(file_path),
                                        keep_bytes=keep_bytes))

    def corrupt_listing(self, repo_id: str, file_path: str, *, sha256: str | None = "0" * 64,
                        size: int | None = None, times: int | None = None) -> HubFault:
        """The file listing of ``repo_id`` reports ``sha256`` (default: 64 zeros) and, when given, ``size`` for
        ``file_path`` instead of the true values; the file itself is served unchanged."""
        pattern = re.compile(rf"^/api/v1/models/{re.escape(repo_id)}/repo/files$")
        return self._add_fault(HubFault("listing", "GET", pattern, times, file_path=_repo_file_path(file_path),
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

    # ------------------------------------------------------------------ repositories
    def repo_dir(self, repo_id: str) -> Path:
        """Folder of ``owner/name`` under :attr:`root` (may not exist yet)."""
        owner, _, name = repo_id.partition("/")
        return self.root / _check_name(owner, "owner") / _check_name(name, "repository name")

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> Path:
        """Create (or extend) repository ``owner/name`` with ``{path: bytes}``; returns its folder."""
        folder = self.repo_dir(repo_id)
        for rel, data in files.items():
            target = folder / _repo_file_path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _existing_repo(self, owner: str, name: str) -> Path:
        folder = self.repo_dir(f"{owner}/{name}")
        if not folder.is_dir():
            raise _HubError(404, f"Model {owner}/{name} does not exist")
        return folder

    def _check_revision(self, revision: str | None) -> str:
        revision = revision or DEFAULT_REVISION
        if revision != DEFAULT_REVISION:
            raise _HubError(404, f"Revision {revision!r} does not exist (the emulator only has {DEFAULT_REVISION!r})")
        return revision

    def _repo_info(self, owner: str, name: str) -> dict[str, Any]:
        self._existing_repo(owner, name)
        meta = self._meta.get(f"{owner}/{name}", {})
        return {"Path": owner, "Owner": owner, "Name": name, "Visibility": meta.get("Visibility", 5),
                "License": meta.get("License", "Apache License 2.0")}

    def _listing(self, folder: Path, recursive: bool, root: str | None) -> list[dict[str, Any]]:
        base = folder / _repo_file_path(root.strip("/")) if root and root.strip("/") else folder
        if not base.is_dir():
            raise _HubError(404, f"folder {root!r} does not exist")
        entries = sorted(base.rglob("*") if recursive else base.iterdir())
        files = []
        for entry in entries:
            rel = entry.relative_to(folder).as_posix()
            if entry.is_dir():
                files.append({"Name": entry.name, "Path": rel, "Type": "tree", "Size": 0, "Sha256": ""})
            else:
                files.append({"Name": entry.name, "Path": rel, "Type": "blob", "Size": entry.stat().st_size,
                              "Sha256": sha256_file(entry)})
        return files

    # ------------------------------------------------------------------ uploads
    def _blob_path(self, oid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", oid or ""):
            raise _HubError(400, f"invalid LFS oid {oid!r}")
        return self.root / _BLOB_DIR / oid

    def _create_repo(self, body: dict[str, Any]) -> dict[str, Any]:
        owner, name = body.get("Path") or body.get("Owner") or "", body.get("Name") or ""
        folder = self.repo_dir(f"{_check_name(owner, 'owner')}/{_check_name(name, 'repository name')}")
        with self._write_lock:
            if folder.is_dir():
                raise _HubError(400, f"Repository name already exists: {owner}/{name}", ALREADY_EXISTS_CODE)
            folder.mkdir(parents=True)
            self._meta[f"{owner}/{name}"] = {"Visibility": body.get("Visibility", 5), "License": body.get("License")}
        return self._repo_info(owner, name)

    def _lfs_batch(self, owner: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._existing_repo(owner, name)
        if body.get("operation") != "upload":
            raise _HubError(400, f"unsupported LFS operation {body.get('operation')!r}")
        objects = []
        for obj in body.get("objects") or []:
            oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
            entry: dict[str, Any] = {"oid": oid, "size": size}
            blob = self._blob_path(oid)
            if not (blob.is_file() and blob.stat().st_size == size):
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/_emulator/lfs/{owner}/{name}/{oid}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _store_blob(self, oid: str, data: bytes) -> None:
        blob = self._blob_path(oid)
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, f"uploaded bytes do not hash to oid {oid}")
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(f"{oid}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, blob)

    def _commit(self, owner: str, name: str, revision: str, body: dict[str, Any]) -> dict[str, Any]:
        folder = self._existing_repo(owner, name)
        revision = self._check_revision(revision)
        staged: list[tuple[str, str, bytes | None]] = []
        record = HubCommit(f"{owner}/{name}", revision, str(body.get("commit_message", "")))
        for action in body.get("actions") or []:
            kind, rel, mode = action.get("action"), _repo_file_path(str(action.get("path", ""))), action.get("type")
            if kind == "delete":
                staged.append((kind, rel, None))
            elif kind in ("create", "update") and mode == "normal":
                if action.get("encoding") != "base64":
                    raise _HubError(400, f"{rel}: unsupported encoding {action.get('encoding')!r}")
                staged.append((kind, rel, base64.b64decode(action.get("content") or "", validate=True)))
            elif kind in ("create", "update") and mode == "lfs":
                blob = self._blob_path(str(action.get("sha256", "")))
                if not blob.is_file():
                    raise _HubError(400, f"{rel}: LFS object {action.get('sha256')} was never uploaded")
                data = blob.read_bytes()
                if len(data) != int(action.get("size", -1)):
                    raise _HubError(400, f"{rel}: LFS size {action.get('size')} != stored {len(data)}")
                staged.append((kind, rel, data))
            else:
                raise _HubError(400, f"{rel}: unsupported action {kind!r} / type {mode!r}")
            record.actions.append((str(kind), rel, str(mode)))
        with self._write_lock:
            for kind, rel, data in staged:
                target = folder / rel
                if data is None:
                    target.unlink(missing_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            self.commits.append(record)
        return {"CommitId": uuid.uuid4().hex + uuid.uuid4().hex[:8], "Revision": revision,
                "CommitMessage": record.message}

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


class _Handler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"
    server_version = "ModelScopeHubEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def hub(self) -> HubEmulator:
        return self.server.emulator

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body.extend(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", self._request_id)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _legacy_ok(self, data: Any, extra: dict[str, str] | None = None) -> None:
        payload = {"Code": 200, "Data": data, "Message": "success", "RequestId": self._request_id, "Success": True}
        self._send(200, json.dumps(payload).encode(), "application/json", extra)

    def _openapi_ok(self, data: Any) -> None:
        payload = {"success": True, "request_id": self._request_id, "data": data}
        self._send(200, json.dumps(payload).encode(), "application/json")

    def _error(self, exc: _HubError, openapi: bool) -> None:
        if openapi:
            code = {400: "InputParameterError", 401: "InvalidAuthentication", 404: "ResourceNotFound"}
            payload: dict[str, Any] = {"success": False, "code": code.get(exc.status, "InternalServerError"),
                                       "message": exc.message, "request_id": self._request_id}
        else:
            payload = {"Code": exc.code, "Message": exc.message, "RequestId": self._request_id, "Success": False}
        self._send(exc.status, json.dumps(payload).encode(), "application/json", head=self.command == "HEAD")

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise _HubError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _HubError(400, "request body must be a JSON object")
        return body

    def _require_auth(self) -> None:
        if not self.hub._authorized(self.headers):
            raise _HubError(401, "user not logged in: send the emulator token as Bearer or m_session_id cookie")

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        self._request_id = uuid.uuid4().hex
        url = urlsplit(self.path)
        path = self._path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.hub._log(self.command, path, query)
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        openapi = path.startswith("/openapi/")
        try:
            fault = self.hub._take_fault("status", self.command, path)
            if fault is not None:
                raise _HubError(fault.status, f"emulated fault: HTTP {fault.status} on {self.command} {path}")
            self._route(self.command, path, query, body)
        except _HubError as exc:
            self._error(exc, openapi)
        except Exception as exc:  # a bug in the emulator: say so instead of dropping the connection
            self._error(_HubError(500, f"emulator failure on {self.command} {path}: {exc!r}"), openapi)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        hub = self.hub
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[:3] == ["openapi", "v1", "models"] and len(parts) == 5:
            info = hub._repo_info(parts[3], parts[4])
            return self._openapi_ok({"id": f"{parts[3]}/{parts[4]}", "owner": parts[3], "name": parts[4],
                                     "private": info["Visibility"] == 1, "license": info["License"]})
        if method == "GET" and parts == ["openapi", "v1", "users", "me"]:
            if hub.token is None or not hub._authorized(self.headers):
                raise _HubError(401, "user not logged in")
            return self._openapi_ok({"username": hub.username, "email": f"{hub.username}@example.invalid"})
        if parts[:2] != ["api", "v1"]:
            raise _HubError(404, f"emulator: unsupported endpoint {method} {path}")
        rest = parts[2:]
        if method == "GET" and rest == ["repos", "internalAccelerationInfo"]:
            raise _HubError(404, "no intra-cloud acceleration on the emulator")
        if method == "POST" and rest == ["login"]:
            token = str(self._json(body).get("AccessToken", ""))
            if hub.token is not None and token != hub.token:
                raise _HubError(401, "AccessToken is invalid or expired")
            data = {"AccessToken": token, "Username": hub.username, "Email": f"{hub.username}@example.invalid"}
            return self._legacy_ok(data, {"Set-Cookie": f"m_session_id={token}; Path=/"})
        if method == "POST" and rest == ["models"]:
            self._require_auth()
            return self._legacy_ok(hub._create_repo(self._json(body)))
        if rest[:1] == ["models"] and len(rest) >= 3:
            return self._model_read(method, rest[1], rest[2], rest[3:], query)
        if rest[:2] == ["repos", "models"] and len(rest) >= 5:
            owner, name, tail = rest[2], rest[3], rest[4:]
            if method == "POST" and tail == ["info", "lfs", "objects", "batch"]:
                self._require_auth()
                payload = hub._lfs_batch(owner, name, self._json(body))
                return self._send(200, json.dumps(payload).encode(), "application/vnd.git-lfs+json")
            if method == "POST" and len(tail) == 2 and tail[0] == "commit":
                self._require_auth()
                return self._legacy_ok(hub._commit(owner, name, tail[1], self._json(body)))
        raise _HubError(404, f"emulator: unsupported endpoint {method} {path}")

    def _model_read(self, method: str, owner: str, name: str, tail: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if method == "GET" and not tail:
            return self._legacy_ok(hub._repo_info(owner, name))
        folder = hub._existing_repo(owner, name)
        if method == "GET" and tail == ["repo", "files"]:
            hub._check_revision(query.get("Revision"))
            recursive = query.get("Recursive", "False").lower() == "true"
            files = hub._listing(folder, recursive, query.get("Root"))
            for entry in files:
                fault = hub._take_fault("listing", method, self._path, entry["Path"]) if entry["Type"] == "blob" else None
                if fault is not None:
                    entry.update({k: v for k, v in (("Sha256", fault.sha256), ("Size", fault.size)) if v is not None})
            return self._legacy_ok({"Files": files})
        if method in ("GET", "HEAD") and tail == ["repo"]:
            hub._check_revision(query.get("Revision"))
            return self._send_file(folder, _repo_file_path(query.get("FilePath", "")), head=method == "HEAD")
        raise _HubError(404, f"emulator: unsupported endpoint {method} {self.path}")

    def _send_file(self, folder: Path, rel: str, head: bool) -> None:
        target = folder / rel
        if not target.is_file():
            raise _HubError(404, f"file {rel!r} does not exist in {folder.parent.name}/{folder.name}")
        total = target.stat().st_size
        start, end, status = 0, total - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
            else:
                start = max(0, total - int(match.group(2)))
            if start >= total or start > end:
                return self._send(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{total}"}, head)
            status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Request-Id", self._request_id)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if head:
            return
        fault = self.hub._take_fault("truncate", "GET", self._path, rel)
        if fault is not None:  # promise `length` bytes, send fewer, hang up
            length = min(length - 1, length // 2 if fault.keep_bytes is None else fault.keep_bytes)
            self.close_connection = True
        with target.open("rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining > 0:
                block = fh.read(min(_CHUNK, remaining))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    def _put_blob(self) -> None:
        parts = [p for p in unquote(urlsplit(self.path).path).split("/") if p]
        if len(parts) != 5 or parts[:2] != ["_emulator", "lfs"]:
            raise _HubError(404, f"emulator: unsupported endpoint PUT {self.path}")
        self._require_auth()
        self.hub._existing_repo(parts[2], parts[3])
        self.hub._store_blob(parts[4], self._blob_body)
        self._legacy_ok(None)

    # ------------------------------------------------------------------ verbs
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._request_id = uuid.uuid4().hex
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.hub._log("PUT", unquote(url.path), query)
        self._blob_body = self._read_body()
        try:
            fault = self.hub._take_fault("status", "PUT", unquote(url.path))
            if fault is not None:
                raise _HubError(fault.status, f"emulated fault: HTTP {fault.status} on PUT {unquote(url.path)}")
            self._put_blob()
        except _HubError as exc:
            self._error(exc, openapi=False)


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


HubEmulator.handler_class = _Handler
