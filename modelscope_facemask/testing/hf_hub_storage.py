"""The Hugging Face Hub emulator's repositories, kept in memory: files (LFS ones resolved to their content), which
of them are LFS, the commit shas (only the revision ``main`` exists, and every commit sha of it); the uploaded LFS
blobs; and :class:`HfError`, which every answer other than success is raised as. The HTTP side:
:mod:`.hf_hub_routes`; the emulator itself: :mod:`.hf_hub_emulator`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

MAIN = "main"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
POINTER_SIZE = 134


@dataclass
class HfRepo:
    """One repository: private or not, its files, which of them are LFS files, its commit shas (oldest first)."""

    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)


class HfError(Exception):
    """An answer other than success: HTTP ``status``, a message, the ``X-Error-Code`` and more fields of the JSON
    body."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the hub calls a regular file's ``oid`` and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file of a blob with sha256 ``oid`` and ``size`` bytes."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class HfStorage:
    """The repositories and blobs of one emulator; repositories created without an organization belong to ``user``."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.repos: dict[str, HfRepo] = {}
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def repo(self, repo_id: str) -> HfRepo:
        """The repository ``repo_id`` (KeyError when there is none)."""
        return self.repos[repo_id]

    def repo_files(self, repo_id: str) -> dict[str, bytes]:
        """The committed files of ``repo_id`` (LFS files resolved to their content)."""
        return dict(self.repos[repo_id].files)

    def _sha(self, repo: HfRepo) -> str:
        return repo.commits[-1] if repo.commits else "0" * 40

    def _find(self, owner: str, name: str, authorized: bool) -> tuple[str, HfRepo]:
        repo_id = f"{owner}/{name}"
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HfError(404, "Repository not found", "RepoNotFound")
        return repo_id, repo

    def _check_revision(self, repo: HfRepo, revision: str) -> None:
        if unquote(revision) not in (MAIN, self._sha(repo)) and unquote(revision) not in repo.commits:
            raise HfError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")

    def _entry(self, repo_id: str, repo: HfRepo, path: str) -> dict[str, Any]:
        data = repo.files[path]
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
        if path in repo.lfs:
            oid = hashlib.sha256(data).hexdigest()
            entry["oid"] = git_blob_sha1(lfs_pointer(oid, len(data)))
            entry["lfs"] = {"oid": oid, "size": len(data), "pointerSize": POINTER_SIZE}
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    def _tree(self, repo_id: str, repo: HfRepo, root: str, recursive: bool) -> list[dict[str, Any]]:
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
            raise HfError(404, f"{root} does not exist on {MAIN}", "EntryNotFound")
        return dirs + entries

    def _create(self, body: dict[str, Any], authorized: bool, endpoint: str) -> dict[str, Any]:
        """Create the repository ``body`` names; the answer (and the 409 of an existing one) carries its url."""
        if not authorized:
            raise HfError(401, "Invalid username or password.")
        name, owner = body.get("name"), body.get("organization") or self.user
        if not (isinstance(name, str) and _NAME_RE.match(name) and _NAME_RE.match(owner)):
            raise HfError(400, f"invalid repository name {owner}/{name}")
        repo_id = f"{owner}/{name}"
        with self._lock:
            if repo_id in self.repos:
                # the real hub's 409 body carries the repository url, which create_repo(exist_ok=True) returns
                raise HfError(409, "You already created this model repo", extra={"url": f"{endpoint}/{repo_id}"})
            private = body.get("visibility") == "private" or body.get("private") is True
            self.repos[repo_id] = HfRepo(private=private)
        return {"url": f"{endpoint}/{repo_id}", "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def _commit(self, repo_id: str, repo: HfRepo, body: bytes, endpoint: str) -> dict[str, Any]:
        """Apply the NDJSON commit ``body`` to ``repo`` all at once; the answer names the new commit."""
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HfError(400, "commit payload must start with a header line")
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
                        raise HfError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
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
                    raise HfError(400, f"unknown commit operation {key!r}")
            sha = hashlib.sha1(json.dumps([repo_id, len(repo.commits), lines], sort_keys=True).encode()).hexdigest()
            repo.files, repo.lfs = files, lfs
            repo.commits.append(sha)
        return {"commitUrl": f"{endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True,
                "pullRequestUrl": None}
