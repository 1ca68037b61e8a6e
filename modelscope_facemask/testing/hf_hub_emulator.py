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
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .loopback_server import LoopbackServer

MAIN = "main"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: files the emulator's preupload answer sends through LFS (besides anything over ``LFS_THRESHOLD`` bytes)
LFS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".onnx", ".h5", ".msgpack", ".npz", ".pkl")
LFS_THRESHOLD = 10 * 1024 * 1024
POINTER_SIZE = 134


class HfRequest(NamedTuple):
    """One request as the emulator received it: method, the route's path template, the raw path."""

    method: str
    template: str
    path: str


@dataclass
class _Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)


class _HfError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the hub calls a regular file's ``oid`` and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


#: Hugging Face pipeline tags the emulator accepts in a card's ``pipeline_tag`` (a subset of the hub's task list)
PIPELINE_TAGS = frozenset({
    "image-feature-extraction", "feature-extraction", "image-classification", "object-detection",
    "image-segmentation", "zero-shot-image-classification", "sentence-similarity", "text-classification"})


def validate_card_metadata(content: str) -> list[str]:
    """What ``POST /api/validate-yaml`` objects to in a README's front matter (empty: accepted): it must be a YAML
    mapping; ``license``/``library_name``/``pipeline_tag`` strings, ``tags`` a list of strings, ``pipeline_tag``
    one of :data:`PIPELINE_TAGS`. (The real hub checks more, e.g. the license against its list.)"""
    import yaml

    if not content.startswith("---"):
        return []
    end = content.find("\n---", 3)
    try:
        meta = yaml.safe_load(content[3:end] if end > 0 else "")
    except yaml.YAMLError as exc:
        return [f"YAML front matter does not parse: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["YAML front matter must be a mapping"]
    errors = [f'"{key}" must be a string' for key in ("license", "library_name", "pipeline_tag")
              if key in meta and not isinstance(meta[key], str)]
    if "tags" in meta and not (isinstance(meta["tags"], list) and all(isinstance(t, str) for t in meta["tags"])):
        errors.append('"tags" must be a list of strings')
    if isinstance(meta.get("pipeline_tag"), str) and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, got {meta["pipeline_tag"]!r}')
    return errors


def _lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class HfHubEmulator(LoopbackServer):
    """The emulator; use as a context manager, or :meth:`start` / :meth:`stop`."""

    thread_name = "hf-hub-emulator"

    def __init__(self, *, token: str | None = None, user: str = "facemask-test") -> None:
        self.token, self.user = token, user
        self.repos: dict[str, _Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[HfRequest] = []
        self.tampered: dict[tuple[str, str], bytes] = {}
        self.faults: list[tuple[str | None, re.Pattern[str], int, bool]] = []
        self._lock = threading.Lock()

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
        self.tampered.clear()
        self.faults.clear()

    def request_templates(self) -> list[str]:
        """``"METHOD template"`` of every request so far, in order."""
        return [f"{r.method} {r.template}" for r in self.requests]

    # -- state -----------------------------------------------------------------------------------------------
    def repo(self, repo_id: str) -> _Repo:
        return self.repos[repo_id]

    def repo_files(self, repo_id: str) -> dict[str, bytes]:
        """The committed files of ``repo_id`` (LFS files resolved to their content)."""
        return dict(self.repos[repo_id].files)

    def _sha(self, repo: _Repo) -> str:
        return repo.commits[-1] if repo.commits else "0" * 40

    def _find(self, owner: str, name: str, authorized: bool) -> tuple[str, _Repo]:
        repo_id = f"{owner}/{name}"
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise _HfError(404, "Repository not found", "RepoNotFound")
        return repo_id, repo

    def _check_revision(self, repo: _Repo, revision: str) -> None:
        if unquote(revision) not in (MAIN, self._sha(repo)) and unquote(revision) not in repo.commits:
            raise _HfError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")

    def _entry(self, repo_id: str, repo: _Repo, path: str) -> dict[str, Any]:
        data = repo.files[path]
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
        if path in repo.lfs:
            oid = hashlib.sha256(data).hexdigest()
            entry["oid"] = git_blob_sha1(_lfs_pointer(oid, len(data)))
            entry["lfs"] = {"oid": oid, "size": len(data), "pointerSize": POINTER_SIZE}
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    def _tree(self, repo_id: str, repo: _Repo, root: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{root}/" if root else ""
        entries, folders = [], set()
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            for parent in PurePosixPath(rest).parents:
                if str(parent) != ".":
                    folders.add(prefix + str(parent))
            entries.append(self._entry(repo_id, repo, path))
        dirs = [{"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()}
                for f in sorted(folders)]
        if root and not entries and not dirs:
            raise _HfError(404, f"{root} does not exist on {MAIN}", "EntryNotFound")
        return dirs + entries

    def _create(self, body: dict[str, Any], authorized: bool) -> dict[str, Any]:
        if not authorized:
            raise _HfError(401, "Invalid username or password.")
        name, owner = body.get("name"), body.get("organization") or self.user
        if not (isinstance(name, str) and _NAME_RE.match(name) and _NAME_RE.match(owner)):
            raise _HfError(400, f"invalid repository name {owner}/{name}")
        repo_id = f"{owner}/{name}"
        with self._lock:
            if repo_id in self.repos:
                # the real hub's 409 body carries the repository url, which create_repo(exist_ok=True) returns
                raise _HfError(409, "You already created this model repo", extra={"url": f"{self.endpoint}/{repo_id}"})
            private = body.get("visibility") == "private" or body.get("private") is True
            self.repos[repo_id] = _Repo(private=private)
        return {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def _commit(self, repo_id: str, repo: _Repo, body: bytes) -> dict[str, Any]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HfError(400, "commit payload must start with a header line")
        with self._lock:
            files, lfs = dict(repo.files), set(repo.lfs)
            for item in lines[1:]:
                key, value = item.get("key"), item.get("value") or {}
                path = value.get("path", "")
                if key == "file":
                    files[path] = base64.b64decode(value["content"])
                    lfs.discard(path)
                elif key == "lfsFile":
                    blob = self.blobs.get(value.get("oid", ""))
                    if blob is None:
                        raise _HfError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
                    files[path] = blob
                    lfs.add(path)
                elif key == "deletedFile":
                    files.pop(path, None)
                    lfs.discard(path)
                elif key == "deletedFolder":
                    for p in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                        files.pop(p)
                        lfs.discard(p)
                else:
                    raise _HfError(400, f"unknown commit operation {key!r}")
            sha = hashlib.sha1(json.dumps([repo_id, len(repo.commits), lines], sort_keys=True).encode()).hexdigest()
            repo.files, repo.lfs = files, lfs
            repo.commits.append(sha)
        return {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True,
                "pullRequestUrl": None}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def emu(self) -> HfHubEmulator:
        return self.server.emulator

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              extra: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: Any, extra: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(data).encode(), extra=extra)

    def _authorized(self) -> bool:
        token = self.emu.token
        return token is None or self.headers.get("Authorization", "") == f"Bearer {token}"

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = self._body() if method in ("POST", "PUT") else b""
        template = "?"
        try:
            for fault_method, pattern, status, echo in self.emu.faults:
                if (fault_method is None or fault_method == method) and pattern.search(path):
                    echoed = "; request headers: " + "; ".join(f"{k}: {v}" for k, v in self.headers.items())
                    raise _HfError(status, f"emulated fault on {path}" + (echoed if echo else ""))
            template = self._route(method, path, query, body)
        except _HfError as exc:
            extra = {"X-Error-Code": exc.code} if exc.code else {}
            extra["X-Error-Message"] = exc.message
            self._send(exc.status, json.dumps({"error": exc.message, **exc.extra}).encode(), extra=extra,
                       head=method == "HEAD")
        except (ValueError, KeyError) as exc:
            self._send(400, json.dumps({"error": f"bad request: {exc}"}).encode(), head=method == "HEAD")
        finally:
            if template == "?":  # an error answer: still logged as a template, not with the repository's name
                template = re.sub(r"^/api/models/[^/]+/[^/]+", "/api/models/{repo}", path)
            self.emu.requests.append(HfRequest(method, template, path))

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> str:
        emu = self.emu
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and path == "/api/whoami-v2":
            if self.headers.get("Authorization") is None or not self._authorized():
                raise _HfError(401, "Invalid credentials in Authorization header")
            self._json({"type": "user", "name": emu.user, "auth": {"type": "access_token"}})
            return "/api/whoami-v2"
        if method == "POST" and path == "/api/validate-yaml":
            errors = validate_card_metadata(json.loads(body or b"{}").get("content", ""))
            if errors:
                self._send(400, json.dumps({"errors": [{"message": e} for e in errors]}).encode())
            else:
                self._json({"warnings": []})
            return "/api/validate-yaml"
        if method == "POST" and path == "/api/repos/create":
            self._json(emu._create(json.loads(body or b"{}"), self._authorized()))
            return "/api/repos/create"
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-upload":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise _HfError(400, f"uploaded bytes do not hash to {oid}")
            emu.blobs[oid] = body
            self._send(200)
            return "/lfs-upload/{oid}"
        if method == "GET" and len(parts) == 2 and parts[0] == "lfs-cdn":
            repo_id, rel = query.get("repo", ""), query.get("file", "")
            data = emu.tampered.get((repo_id, rel), emu.blobs.get(parts[1]))
            if data is None:
                raise _HfError(404, "no such object")
            self._send(200, data, "application/octet-stream", {"ETag": f'"{parts[1]}"'})
            return "/lfs-cdn/{oid} (the CDN host)"
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api_model(method, parts[2], parts[3], parts[4:], query, body)
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs", "objects"]:
            return self._lfs(method, parts[0], parts[1][:-4], parts[5:], body)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, parts[0], parts[1], parts[3], "/".join(parts[4:]))
        raise _HfError(404, f"the emulator does not serve {method} {path}")

    def _api_model(self, method: str, owner: str, name: str, tail: list[str], query: dict[str, str],
                   body: bytes) -> str:
        emu = self.emu
        authorized = self._authorized() and (emu.token is None or "Authorization" in self.headers)
        repo_id, repo = emu._find(owner, name, authorized)
        if method == "GET" and (not tail or (tail[0] == "revision" and len(tail) == 2)):
            if tail:
                emu._check_revision(repo, tail[1])
            self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": owner, "sha": emu._sha(repo),
                        "private": repo.private, "disabled": False, "gated": False, "tags": [],
                        "siblings": [{"rfilename": p} for p in sorted(repo.files)]})
            return "/api/models/{repo}" + ("/revision/{rev}" if tail else "")
        if method == "GET" and tail[:1] == ["tree"] and len(tail) >= 2:
            emu._check_revision(repo, tail[1])
            entries = emu._tree(repo_id, repo, "/".join(tail[2:]), query.get("recursive", "").lower() in ("1", "true"))
            self._json(entries)
            return "/api/models/{repo}/tree/{rev}" + ("/{path}" if tail[2:] else "")
        if method == "POST" and tail[:1] == ["paths-info"] and len(tail) == 2:
            emu._check_revision(repo, tail[1])
            form = parse_qs(body.decode()) if "form" in self.headers.get("Content-Type", "") else None
            paths = form.get("paths", []) if form is not None else json.loads(body or b"{}").get("paths", [])
            entries = []
            for rel in paths:
                if rel in repo.files:
                    entries.append(emu._entry(repo_id, repo, rel))
                elif any(p.startswith(rel.rstrip("/") + "/") for p in repo.files):
                    entries.append({"type": "directory", "path": rel, "size": 0,
                                    "oid": hashlib.sha1(rel.encode()).hexdigest()})
            self._json(entries)
            return "/api/models/{repo}/paths-info/{rev}"
        if not self._authorized() or (emu.token is not None and "Authorization" not in self.headers):
            raise _HfError(401, "Invalid credentials in Authorization header")
        if method == "POST" and tail[:1] == ["preupload"] and len(tail) == 2:
            emu._check_revision(repo, tail[1])
            files = []
            for item in json.loads(body)["files"]:
                rel, size = item["path"], int(item["size"])
                lfs = size > LFS_THRESHOLD or rel.lower().endswith(LFS_SUFFIXES)
                oid = emu._entry(repo_id, repo, rel)["oid"] if rel in repo.files else None
                files.append({"path": rel, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": oid})
            self._json({"files": files, "commitOid": emu._sha(repo)})
            return "/api/models/{repo}/preupload/{rev}"
        if method == "POST" and tail[:1] == ["commit"] and len(tail) == 2:
            emu._check_revision(repo, tail[1])
            self._json(emu._commit(repo_id, repo, body))
            return "/api/models/{repo}/commit/{rev}"
        raise _HfError(404, f"the emulator does not serve {method} /api/models/{repo_id}/{'/'.join(tail)}")

    def _lfs(self, method: str, owner: str, name: str, tail: list[str], body: bytes) -> str:
        emu = self.emu
        if not self._authorized() or (emu.token is not None and "Authorization" not in self.headers):
            raise _HfError(401, "Invalid credentials in Authorization header")
        emu._find(owner, name, True)
        request = json.loads(body)
        if method == "POST" and tail == ["batch"]:
            if request.get("operation") != "upload":
                raise _HfError(400, "the emulator only answers LFS uploads")
            objects = []
            for obj in request["objects"]:
                oid, size = obj["oid"], int(obj["size"])
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in emu.blobs:
                    entry["actions"] = {
                        "upload": {"href": f"{emu.endpoint}/lfs-upload/{oid}", "header": {}},
                        "verify": {"href": f"{emu.endpoint}/{owner}/{name}.git/info/lfs/objects/verify",
                                   "header": {}}}
                objects.append(entry)
            self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                       "application/vnd.git-lfs+json")
            return "/{repo}.git/info/lfs/objects/batch"
        if method == "POST" and tail == ["verify"]:
            blob = emu.blobs.get(request.get("oid", ""))
            if blob is None or len(blob) != request.get("size"):
                raise _HfError(404, f"LFS object {request.get('oid')} not uploaded (or of another size)")
            self._json({"success": True})
            return "/{repo}.git/info/lfs/objects/verify"
        raise _HfError(404, "unknown LFS request")

    def _resolve(self, method: str, owner: str, name: str, revision: str, rel: str) -> str:
        emu = self.emu
        authorized = self._authorized() and (emu.token is None or "Authorization" in self.headers)
        repo_id, repo = emu._find(owner, name, authorized)
        emu._check_revision(repo, revision)
        if rel not in repo.files:
            raise _HfError(404, f"{rel} does not exist on {revision}", "EntryNotFound")
        data = repo.files[rel]
        head = method == "HEAD"
        common = {"X-Repo-Commit": emu._sha(repo), "Accept-Ranges": "bytes"}
        if rel in repo.lfs:
            oid = hashlib.sha256(data).hexdigest()
            location = f"{emu.cdn}/lfs-cdn/{oid}?repo={quote(repo_id)}&file={quote(rel)}"
            self._send(302, b"", "text/plain", {**common, "Location": location, "X-Linked-Etag": f'"{oid}"',
                                                 "X-Linked-Size": str(len(data)),
                                                 "ETag": f'"{git_blob_sha1(_lfs_pointer(oid, len(data)))}"'},
                       head=head)
            return "/{repo}/resolve/{rev}/{path} (LFS: 302)"
        served = emu.tampered.get((repo_id, rel), data)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(served)))
        self.send_header("ETag", f'"{git_blob_sha1(data)}"')
        for key, value in common.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(served)
        return "/{repo}/resolve/{rev}/{path}"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")


def hf_environment(emulator: HfHubEmulator, cache_dir: str | os.PathLike[str], token: str | None = None) -> dict[str, str]:
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
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", env["HF_ENDPOINT"] + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", int(env["HF_HUB_ETAG_TIMEOUT"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE") == "1")


HfHubEmulator.handler_class = _Handler
