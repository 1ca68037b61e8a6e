"""The ModelScope hub emulator's repositories: plain folders ``root/<owner>/<name>/<files>`` (only the revision
``master`` exists), the uploaded LFS blobs beside them and the commits accepted; and :class:`HubError`, which every
answer other than success is raised as. The HTTP side: :mod:`.hub_routes`; the emulator itself: :mod:`.hub_emulator`.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..model_files.registry_files import sha256_file

DEFAULT_REVISION = "master"
#: what the China site answers when a repository name is taken (mapped to AlreadyExistsError by the client)
ALREADY_EXISTS_CODE = 10010101001
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BLOB_DIR = ".lfs-objects"


@dataclass
class HubCommit:
    """One accepted commit: which files it touched and how (``normal`` = inline base64, ``lfs`` = pointer)."""

    repo_id: str
    revision: str
    message: str
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (action, path, type)


class HubError(Exception):
    """An answer other than success: HTTP ``status``, a message and the hub's business ``code`` (default: the
    status)."""

    def __init__(self, status: int, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = status if code is None else code


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid owner or repository name (``what`` says which), else HubError 400."""
    if not _NAME_RE.match(value or "") or ".." in value:
        raise HubError(400, f"invalid {what} {value!r}")
    return value


def repo_file_path(value: str) -> str:
    """Normalise a repository file path; reject absolute paths and ``..``."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not parts or value.startswith("/") or ".." in parts:
        raise HubError(400, f"invalid file path {value!r}")
    return "/".join(parts)


class HubStorage:
    """The repositories, blobs and commits of one emulator, under :attr:`root` (a temporary folder when not given)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hub-emulator-") if root is None else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.commits: list[HubCommit] = []
        self._write_lock = threading.Lock()
        self._meta: dict[str, dict[str, Any]] = {}

    def _remove_own_root(self) -> None:
        """Delete :attr:`root` if it is the temporary folder made for this emulator."""
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ repositories
    def repo_dir(self, repo_id: str) -> Path:
        """Folder of ``owner/name`` under :attr:`root` (may not exist yet)."""
        owner, _, name = repo_id.partition("/")
        return self.root / check_name(owner, "owner") / check_name(name, "repository name")

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> Path:
        """Create (or extend) repository ``owner/name`` with ``{path: bytes}``; returns its folder."""
        folder = self.repo_dir(repo_id)
        for rel, data in files.items():
            target = folder / repo_file_path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _existing_repo(self, owner: str, name: str) -> Path:
        folder = self.repo_dir(f"{owner}/{name}")
        if not folder.is_dir():
            raise HubError(404, f"Model {owner}/{name} does not exist")
        return folder

    def _check_revision(self, revision: str | None) -> str:
        revision = revision or DEFAULT_REVISION
        if revision != DEFAULT_REVISION:
            raise HubError(404, f"Revision {revision!r} does not exist (the emulator only has {DEFAULT_REVISION!r})")
        return revision

    def _repo_info(self, owner: str, name: str) -> dict[str, Any]:
        self._existing_repo(owner, name)
        meta = self._meta.get(f"{owner}/{name}", {})
        return {"Path": owner, "Owner": owner, "Name": name, "Visibility": meta.get("Visibility", 5),
                "License": meta.get("License", "Apache License 2.0")}

    def _listing(self, folder: Path, recursive: bool, root: str | None) -> list[dict[str, Any]]:
        base = folder / repo_file_path(root.strip("/")) if root and root.strip("/") else folder
        if not base.is_dir():
            raise HubError(404, f"folder {root!r} does not exist")
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
            raise HubError(400, f"invalid LFS oid {oid!r}")
        return self.root / _BLOB_DIR / oid

    def _create_repo(self, body: dict[str, Any]) -> dict[str, Any]:
        owner, name = body.get("Path") or body.get("Owner") or "", body.get("Name") or ""
        folder = self.repo_dir(f"{check_name(owner, 'owner')}/{check_name(name, 'repository name')}")
        with self._write_lock:
            if folder.is_dir():
                raise HubError(400, f"Repository name already exists: {owner}/{name}", ALREADY_EXISTS_CODE)
            folder.mkdir(parents=True)
            self._meta[f"{owner}/{name}"] = {"Visibility": body.get("Visibility", 5), "License": body.get("License")}
        return self._repo_info(owner, name)

    def _lfs_batch(self, owner: str, name: str, body: dict[str, Any], upload_href: str) -> dict[str, Any]:
        """The git-lfs batch answer: an ``upload`` action (to ``upload_href``/oid) per object not stored yet."""
        self._existing_repo(owner, name)
        if body.get("operation") != "upload":
            raise HubError(400, f"unsupported LFS operation {body.get('operation')!r}")
        objects = []
        for obj in body.get("objects") or []:
            oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
            entry: dict[str, Any] = {"oid": oid, "size": size}
            blob = self._blob_path(oid)
            if not (blob.is_file() and blob.stat().st_size == size):
                entry["actions"] = {"upload": {"href": f"{upload_href}/{oid}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _store_blob(self, oid: str, data: bytes) -> None:
        blob = self._blob_path(oid)
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded bytes do not hash to oid {oid}")
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
            kind, rel, mode = action.get("action"), repo_file_path(str(action.get("path", ""))), action.get("type")
            if kind == "delete":
                staged.append((kind, rel, None))
            elif kind in ("create", "update") and mode == "normal":
                if action.get("encoding") != "base64":
                    raise HubError(400, f"{rel}: unsupported encoding {action.get('encoding')!r}")
                staged.append((kind, rel, base64.b64decode(action.get("content") or "", validate=True)))
            elif kind in ("create", "update") and mode == "lfs":
                blob = self._blob_path(str(action.get("sha256", "")))
                if not blob.is_file():
                    raise HubError(400, f"{rel}: LFS object {action.get('sha256')} was never uploaded")
                data = blob.read_bytes()
                if len(data) != int(action.get("size", -1)):
                    raise HubError(400, f"{rel}: LFS size {action.get('size')} != stored {len(data)}")
                staged.append((kind, rel, data))
            else:
                raise HubError(400, f"{rel}: unsupported action {kind!r} / type {mode!r}")
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
