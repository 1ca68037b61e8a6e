"""The HTTP side of the Hugging Face Hub emulator: one request handler that answers the endpoints listed in
:mod:`.hf_hub_emulator` from its repositories (:mod:`.hf_hub_storage`), applies its faults and logs each request as
its route's path template; and the rule ``POST /api/validate-yaml`` applies to a model card."""
from __future__ import annotations

import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .hf_hub_storage import HfError, git_blob_sha1, lfs_pointer

#: files the emulator's preupload answer sends through LFS (besides anything over ``LFS_THRESHOLD`` bytes)
LFS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".onnx", ".h5", ".msgpack", ".npz", ".pkl")
LFS_THRESHOLD = 10 * 1024 * 1024


class HfRequest(NamedTuple):
    """One request as the emulator received it: method, the route's path template, the raw path."""

    method: str
    template: str
    path: str


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


class HfHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests for the emulator ``self.server.emulator``."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def emu(self) -> Any:
        """The :class:`~.hf_hub_emulator.HfHubEmulator` serving this request (``Any``: that module imports
        this one)."""
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
                    raise HfError(status, f"emulated fault on {path}" + (echoed if echo else ""))
            template = self._route(method, path, query, body)
        except HfError as exc:
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
                raise HfError(401, "Invalid credentials in Authorization header")
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
            self._json(emu._create(json.loads(body or b"{}"), self._authorized(), emu.endpoint))
            return "/api/repos/create"
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-upload":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HfError(400, f"uploaded bytes do not hash to {oid}")
            emu.blobs[oid] = body
            self._send(200)
            return "/lfs-upload/{oid}"
        if method == "GET" and len(parts) == 2 and parts[0] == "lfs-cdn":
            repo_id, rel = query.get("repo", ""), query.get("file", "")
            data = emu.tampered.get((repo_id, rel), emu.blobs.get(parts[1]))
            if data is None:
                raise HfError(404, "no such object")
            self._send(200, data, "application/octet-stream", {"ETag": f'"{parts[1]}"'})
            return "/lfs-cdn/{oid} (the CDN host)"
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api_model(method, parts[2], parts[3], parts[4:], query, body)
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs", "objects"]:
            return self._lfs(method, parts[0], parts[1][:-4], parts[5:], body)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, parts[0], parts[1], parts[3], "/".join(parts[4:]))
        raise HfError(404, f"the emulator does not serve {method} {path}")

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
            raise HfError(401, "Invalid credentials in Authorization header")
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
            self._json(emu._commit(repo_id, repo, body, emu.endpoint))
            return "/api/models/{repo}/commit/{rev}"
        raise HfError(404, f"the emulator does not serve {method} /api/models/{repo_id}/{'/'.join(tail)}")

    def _lfs(self, method: str, owner: str, name: str, tail: list[str], body: bytes) -> str:
        emu = self.emu
        if not self._authorized() or (emu.token is not None and "Authorization" not in self.headers):
            raise HfError(401, "Invalid credentials in Authorization header")
        emu._find(owner, name, True)
        request = json.loads(body)
        if method == "POST" and tail == ["batch"]:
            if request.get("operation") != "upload":
                raise HfError(400, "the emulator only answers LFS uploads")
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
                raise HfError(404, f"LFS object {request.get('oid')} not uploaded (or of another size)")
            self._json({"success": True})
            return "/{repo}.git/info/lfs/objects/verify"
        raise HfError(404, "unknown LFS request")

    def _resolve(self, method: str, owner: str, name: str, revision: str, rel: str) -> str:
        emu = self.emu
        authorized = self._authorized() and (emu.token is None or "Authorization" in self.headers)
        repo_id, repo = emu._find(owner, name, authorized)
        emu._check_revision(repo, revision)
        if rel not in repo.files:
            raise HfError(404, f"{rel} does not exist on {revision}", "EntryNotFound")
        data = repo.files[rel]
        head = method == "HEAD"
        common = {"X-Repo-Commit": emu._sha(repo), "Accept-Ranges": "bytes"}
        if rel in repo.lfs:
            oid = hashlib.sha256(data).hexdigest()
            location = f"{emu.cdn}/lfs-cdn/{oid}?repo={quote(repo_id)}&file={quote(rel)}"
            self._send(302, b"", "text/plain", {**common, "Location": location, "X-Linked-Etag": f'"{oid}"',
                                                 "X-Linked-Size": str(len(data)),
                                                 "ETag": f'"{git_blob_sha1(lfs_pointer(oid, len(data)))}"'},
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

