"""``facemask publish``: push a ``facemask pack`` folder to the ModelScope hub, then verify what the hub holds.

The upload goes through ModelScope's ``HubApi`` (``create_repo`` + ``upload_folder``) with the token from
``MODELSCOPE_API_TOKEN`` (never printed). ``upload_folder``'s resumable-upload cache is switched off, so nothing
(no ``.ms_upload_cache``) is written into the folder; LFS blobs the hub already has are skipped by the hub's LFS
batch answer anyway. Afterwards the remote file listing is compared with ``manifest.json``: every file must be
there with the same size and, where the listing carries it, the same sha256.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FaceMaskError
from .manifest import MANIFEST_FILE, compare_remote, listed_files, read_manifest, verify_manifest
from .token_scrubbing import TOKEN_ENV  # noqa: F401  (re-exported: the CLI names it)

TOKEN_HELP = ("set MODELSCOPE_API_TOKEN to an access token of the owning account "
              "(https://modelscope.cn/my/myaccesstoken); it is read from the environment and never printed")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishError(FaceMaskError, RuntimeError):
    """The folder cannot be published as it is, or the hub refused or altered the upload."""


@dataclass(frozen=True)
class PublishResult:
    """What was uploaded and what the hub's listing said about it afterwards."""

    plan: list["PlannedFile"]
    problems: list[str]  # empty when the hub holds exactly the manifest's files
    sha256_checked: int  # files whose sha256 the listing carried and matched
    remote_extras: list[str]  # files on the hub that this folder does not have (earlier uploads)
    created: bool  # False: the repository existed (its visibility was left as it was)


@dataclass(frozen=True)
class PlannedFile:
    """One file of the upload: repository path, size, and whether ModelScope's client sends it through LFS."""

    path: str
    size: int
    lfs: bool


def check_model_id(model_id: str) -> str:
    """``owner/name`` or a :class:`PublishError` saying what is wrong."""
    if not _MODEL_ID_RE.match(model_id or "") or ".." in model_id:
        raise PublishError(f"--model-id {model_id!r} must look like OWNER/NAME (letters, digits, '.', '_', '-')")
    return model_id


def uses_lfs(path: str, size: int) -> bool:
    """ModelScope's rule for model repositories (modelscope_hub ``_upload._is_lfs``), from its public constants:
    README/configuration files inline; larger than the force threshold (64 KiB) or a model suffix -> LFS."""
    from modelscope_hub.constants import MODEL_LFS_SUFFIX, UPLOAD_INLINE_METADATA_PATHS, UPLOAD_LFS_FORCE_THRESHOLD_BYTES

    if Path(path).name.upper() in UPLOAD_INLINE_METADATA_PATHS:
        return False
    return size > UPLOAD_LFS_FORCE_THRESHOLD_BYTES or Path(path).suffix.lower() in MODEL_LFS_SUFFIX


def upload_plan(folder: str | os.PathLike) -> list[PlannedFile]:
    """Verify ``folder`` against its manifest and list what would be uploaded (no network)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{str(folder)!r} is not a folder; pass the output folder of `facemask pack`")
    files = read_manifest(folder)
    if files is None:
        raise PublishError(f"{str(folder)!r} has no {MANIFEST_FILE}: publish the output of `facemask pack`")
    verify_manifest(folder)
    unlisted = sorted(set(listed_files(folder)) - set(files))
    if unlisted:
        raise PublishError(f"{str(folder)!r} holds files its manifest does not list ({', '.join(unlisted)}); "
                           "re-run `facemask pack` or remove them")
    sizes = {**{rel: entry["size"] for rel, entry in files.items()}, MANIFEST_FILE: (folder / MANIFEST_FILE).stat().st_size}
    return [PlannedFile(rel, size, uses_lfs(rel, size)) for rel, size in sorted(sizes.items())]


def require_token() -> str:
    """The token from the environment, or a :class:`PublishError` saying how to provide it."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise PublishError(f"no access token: {TOKEN_HELP}")
    return token


def remote_files(model_id: str, token: str) -> dict[str, dict[str, Any]]:
    """``{path: {"size": int, "sha256": str | None}}`` of the files on the hub's master revision."""
    from modelscope_hub import HubApi

    listing = HubApi(token=token).list_repo_files(model_id, "model", recursive=True)
    return {f.path: {"size": f.size, "sha256": f.sha256} for f in listing if not f.is_dir}


def publish_folder(folder: str | os.PathLike, model_id: str, *, private: bool = False, sync: bool = False,
                   commit_message: str | None = None) -> PublishResult:
    """Create the repository (if needed; an existing one keeps its visibility), upload, verify the listing."""
    from modelscope.hub.api import HubApi

    check_model_id(model_id)
    plan = upload_plan(folder)
    token = require_token()
    api = HubApi(token=token)
    license_ = _card_license(Path(folder))
    created = api.create_repo(model_id, visibility="private" if private else "public", license=license_,
                              exist_ok=True) is not None
    api.upload_folder(repo_id=model_id, folder_path=str(folder), commit_message=commit_message or
                      f"facemask publish: {len(plan)} files", use_cache=False, sync_remote_repo=sync)
    remote = remote_files(model_id, token)
    problems, hashed = compare_remote(folder, remote)
    extras = sorted(p for p in set(remote) - {f.path for f in plan} if not p.split("/")[-1].startswith("."))
    return PublishResult(plan, problems, hashed, extras, created)


def _card_license(folder: Path) -> str | None:
    from .model_card import read_front_matter

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    value = read_front_matter(readme.read_text(encoding="utf-8")).get("license")
    return str(value) if value else None
