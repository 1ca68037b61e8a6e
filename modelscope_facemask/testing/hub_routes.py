"""The HTTP side of the ModelScope hub emulator: one request handler that parses each request, answers the
endpoints listed in :mod:`.hub_emulator` from its repositories (:mod:`.hub_storage`) and applies its faults."""
from __future__ import annotations

import json
import re
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .hub_storage import HubError, repo_file_path

_CHUNK = 1 << 20


class HubHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests for the emulator ``self.server.emulator``."""

    server: Any
    protocol_version = "HTTP/1.1"
    server_version = "ModelScopeHubEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def hub(self) -> Any:
        """The :class:`~.hub_emulator.HubEmulator` serving this request (``Any``: that module imports this one)."""
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

    def _error(self, exc: HubError, openapi: bool) -> None:
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
            raise HubError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HubError(400, "request body must be a JSON object")
        return body

    def _require_auth(self) -> None:
        if not self.hub._authorized(self.headers):
            raise HubError(401, "user not logged in: send the emulator token as Bearer or m_session_id cookie")

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
                raise HubError(fault.status, f"emulated fault: HTTP {fault.status} on {self.command} {path}")
            self._route(self.command, path, query, body)
        except HubError as exc:
            self._error(exc, openapi)
        except Exception as exc:  # a bug in the emulator: say so instead of dropping the connection
            self._error(HubError(500, f"emulator failure on {self.command} {path}: {exc!r}"), openapi)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        hub = self.hub
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[:3] == ["openapi", "v1", "models"] and len(parts) == 5:
            info = hub._repo_info(parts[3], parts[4])
            return self._openapi_ok({"id": f"{parts[3]}/{parts[4]}", "owner": parts[3], "name": parts[4],
                                     "private": info["Visibility"] == 1, "license": info["License"]})
        if method == "GET" and parts == ["openapi", "v1", "users", "me"]:
            if hub.token is None or not hub._authorized(self.headers):
                raise HubError(401, "user not logged in")
            return self._openapi_ok({"username": hub.username, "email": f"{hub.username}@example.invalid"})
        if parts[:2] != ["api", "v1"]:
            raise HubError(404, f"emulator: unsupported endpoint {method} {path}")
        rest = parts[2:]
        if method == "GET" and rest == ["repos", "internalAccelerationInfo"]:
            raise HubError(404, "no intra-cloud acceleration on the emulator")
        if method == "POST" and rest == ["login"]:
            token = str(self._json(body).get("AccessToken", ""))
            if hub.token is not None and token != hub.token:
                raise HubError(401, "AccessToken is invalid or expired")
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
                upload_href = f"{hub.endpoint}/_emulator/lfs/{owner}/{name}"  # answered by _put_blob
                payload = hub._lfs_batch(owner, name, self._json(body), upload_href)
                return self._send(200, json.dumps(payload).encode(), "application/vnd.git-lfs+json")
            if method == "POST" and len(tail) == 2 and tail[0] == "commit":
                self._require_auth()
                return self._legacy_ok(hub._commit(owner, name, tail[1], self._json(body)))
        raise HubError(404, f"emulator: unsupported endpoint {method} {path}")

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
                fault = (hub._take_fault("listing", method, self._path, entry["Path"])
                         if entry["Type"] == "blob" else None)
                if fault is not None:
                    entry.update({k: v for k, v in (("Sha256", fault.sha256), ("Size", fault.size)) if v is not None})
            return self._legacy_ok({"Files": files})
        if method in ("GET", "HEAD") and tail == ["repo"]:
            hub._check_revision(query.get("Revision"))
            return self._send_file(folder, repo_file_path(query.get("FilePath", "")), head=method == "HEAD")
        raise HubError(404, f"emulator: unsupported endpoint {method} {self.path}")

    def _send_file(self, folder: Path, rel: str, head: bool) -> None:
        target = folder / rel
        if not target.is_file():
            raise HubError(404, f"file {rel!r} does not exist in {folder.parent.name}/{folder.name}")
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
            raise HubError(404, f"emulator: unsupported endpoint PUT {self.path}")
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
                raise HubError(fault.status, f"emulated fault: HTTP {fault.status} on PUT {unquote(url.path)}")
            self._put_blob()
        except HubError as exc:
            self._error(exc, openapi=False)
