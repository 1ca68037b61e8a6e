"""``facemask publish``: push a ``facemask pack`` folder to the ModelScope hub, then verify what the hub holds.

Exactly the files of :func:`upload_plan` are sent -- the manifest's files plus ``manifest.json`` (the model card,
``README.md``, is one of the manifest's files) -- on both hubs. The plan refuses, naming them, before anything is sent:
hidden files and folders (``.env``, ``.ssh/``: never published), symbolic links of any kind (``facemask pack`` writes
none; one pointing outside the folder would publish a file from elsewhere, one inside would publish a copy under a
second name -- replace it by the file or remove it), anything that is not a regular file, files the manifest does not
list (a stray ``notes.txt`` is refused, not silently skipped), and listed files that are missing or differ from the
manifest. :func:`staged_upload` then puts exactly the planned files into a private temporary folder (hard links where
the file system allows, else copies; no link is ever followed) and checks the staged bytes against the manifest again:
that folder, not the user's, is what the hub clients read. A file replaced (renamed over) between the check and the
upload is therefore refused too; one edited in place after staging shares a hard link's bytes and is caught only by
the verification after the upload, which then fails (``VERIFICATION FAILED``).

The upload goes through ModelScope's ``HubApi`` (``create_repo`` + ``upload_folder`` of the staged folder) with the
token from ``MODELSCOPE_API_TOKEN`` (never printed). ``upload_folder``'s resumable-upload cache is switched off, so
nothing (no ``.ms_upload_cache``) is written into either folder; LFS blobs the hub already has are skipped by the
hub's LFS batch answer anyway. Afterwards the remote file listing is compared with the plan: every manifest file must
be there with the same size and, where the listing carries it, the same sha256; files on the hub that the plan does
not list (earlier uploads; hidden ones included) are reported.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import FaceMaskError
from ...model_files.manifest import MANIFEST_FILE, compare_remote, file_sha256, read_manifest, verify_manifest
from .token_scrubbing import TOKEN_ENV  # noqa: F401  (re-exported: the CLI names it)

TOKEN_HELP = ("set MODELSCOPE_API_TOKEN to an access token of the owning account "
              "(https://modelscope.cn/my/myaccesstoken); it is read from the environment and never printed")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
#: files a hub writes into a new repository itself; not reported as extras of an upload
HUB_GENERATED_FILES = frozenset({".gitattributes"})
_MAX_NAMES = 10  # a refusal names this many paths per kind, then says how many more


class PublishError(FaceMaskError, RuntimeError):
    """The folder cannot be published as it is, or the hub refused or altered the upload."""


@dataclass(frozen=True)
class PublishResult:
    """What was uploaded and what the hub's listing said about it afterwards."""

    plan: list["PlannedFile"]
    problems: list[str]  # empty when the hub holds every planned file with the manifest's size and hash
    sha256_checked: int  # files whose sha256 the listing carried and matched
    remote_extras: list[str]  # files on the hub that the plan does not list (earlier uploads)
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


@dataclass
class _FolderScan:
    """Every entry under a folder, sorted into what may be published and what may not (posix relative paths)."""

    regular: list[str]
    hidden: list[str]
    links: list[str]  # "path -> target (where)"
    special: list[str]  # FIFOs, sockets, devices
    unreadable: list[str]


def _scan_folder(folder: Path) -> _FolderScan:
    """Walk ``folder`` without following any link; a link is reported, never entered."""
    scan = _FolderScan([], [], [], [], [])
    root = folder.resolve()
    errors: list[OSError] = []
    for top, dirs, names in os.walk(folder, onerror=errors.append, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(top) / name
            rel = path.relative_to(folder).as_posix()
            try:
                mode = path.lstat().st_mode
                target = os.readlink(path) if stat.S_ISLNK(mode) else ""
            except OSError as exc:  # removed or changed while the folder was walked
                errors.append(exc)
                continue
            if stat.S_ISLNK(mode):
                inside = (path.parent.resolve() / target).resolve().is_relative_to(root)
                scan.links.append(f"{rel} -> {target} ({'inside' if inside else 'outside'} the folder)")
            elif any(part.startswith(".") for part in Path(rel).parts):
                if not stat.S_ISDIR(mode):
                    scan.hidden.append(rel)
                elif _is_empty(path):
                    scan.hidden.append(rel + "/")  # an empty hidden folder (a full one is named by its files)
            elif stat.S_ISREG(mode):
                scan.regular.append(rel)
            elif not stat.S_ISDIR(mode):
                scan.special.append(rel)
    scan.unreadable = [f"{exc.filename} ({exc.strerror})" for exc in errors]
    return scan


def _is_empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False  # reported by the walk as unreadable


def _names(paths: list[str]) -> str:
    shown = ", ".join(sorted(paths)[:_MAX_NAMES])
    return shown + (f" and {len(paths) - _MAX_NAMES} more" if len(paths) > _MAX_NAMES else "")


def upload_plan(folder: str | os.PathLike) -> list[PlannedFile]:
    """Check ``folder`` and list exactly what publishing it uploads (no network): its manifest's files and the
    manifest. The dry run prints this list and the upload sends it; see the module docstring for what is refused
    (:class:`PublishError` naming every offending path, before anything is sent)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{str(folder)!r} is not a folder; pass the output folder of `facemask pack`")
    if not (folder / MANIFEST_FILE).is_file():
        raise PublishError(f"{str(folder)!r} has no {MANIFEST_FILE}: publish the output of `facemask pack`")
    files = read_manifest(folder) or {}
    scan = _scan_folder(folder)
    found = set(scan.regular) - {MANIFEST_FILE}
    refused = [(what, paths) for what, paths in (
        ("hidden files or folders, which are never published and may hold secrets", scan.hidden),
        ("symbolic links, which are never followed nor published", scan.links),
        ("entries that are not regular files", scan.special),
        ("files its manifest does not list", sorted(found - set(files)))) if paths]
    if refused or scan.unreadable:
        parts = [f"{what} ({_names(paths)})" for what, paths in refused]
        parts += [f"parts that cannot be listed ({_names(scan.unreadable)})"] if scan.unreadable else []
        raise PublishError(f"{str(folder)!r} cannot be published: it holds {'; '.join(parts)}. Remove them or "
                           "move them out of the folder (a `facemask pack` output has none of them; where a link "
                           "stands for a file the manifest lists, put the file itself there), or re-run "
                           "`facemask pack`; nothing was uploaded")
    missing = sorted(set(files) - found)
    if missing:
        raise PublishError(f"{str(folder)!r} cannot be published: its {MANIFEST_FILE} lists files that are not "
                           f"regular files in it ({_names(missing)}); re-run `facemask pack`; nothing was uploaded")
    verify_manifest(folder)
    sizes = {rel: entry["size"] for rel, entry in files.items()}
    sizes[MANIFEST_FILE] = (folder / MANIFEST_FILE).stat().st_size
    return [PlannedFile(rel, size, uses_lfs(rel, size)) for rel, size in sorted(sizes.items())]


def _stage_file(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy where the file system cannot link); never through a link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISREG(source.lstat().st_mode):
        raise PublishError(f"{str(source)!r} stopped being a regular file while publishing; publish again")
    try:
        os.link(source, target, follow_symlinks=False)
        return
    except OSError:
        pass  # another file system, or links not allowed: copy
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


@contextmanager
def staged_upload(folder: str | os.PathLike, plan: list[PlannedFile]) -> Iterator[Path]:
    """A private temporary folder holding exactly ``plan``'s files of ``folder`` (see the module docstring), removed
    afterwards. Checked again there: every staged file is a regular file of the planned size, the staged manifest
    lists exactly the other planned files, and each of them has the sha256 that manifest gives.

    It lies in the system's temporary folder (``TMPDIR``): large weights are linked, not copied, when that is on the
    same file system as ``folder``."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="facemask-publish-") as tmp:
        staged = Path(tmp) / "repository"
        for item in plan:
            _stage_file(folder / item.path, staged / item.path)
        changed = [item.path for item in plan if not stat.S_ISREG((info := (staged / item.path).lstat()).st_mode)
                   or info.st_size != item.size]
        files = {} if changed else read_manifest(staged) or {}
        if not changed and set(files) != {item.path for item in plan} - {MANIFEST_FILE}:
            changed = [MANIFEST_FILE]
        changed = changed or [rel for rel, entry in sorted(files.items())
                              if file_sha256(staged / rel) != entry["sha256"]]
        if changed:
            raise PublishError(f"{str(folder)!r} changed while it was being published ({_names(changed)}); "
                               "re-run `facemask pack` if you changed it on purpose, then publish again; "
                               "nothing was uploaded")
        yield staged


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


def check_remote(staged: Path, remote: dict[str, dict[str, Any]],
                 plan: list[PlannedFile]) -> tuple[list[str], int, list[str]]:
    """(problems, content hashes checked, extras) of a hub's listing after uploading ``plan`` from ``staged``:
    every planned file must be listed with its size (and its content, see
    :func:`~modelscope_facemask.model_files.manifest.compare_remote`); extras are the listed files the plan does not
    hold (hidden ones included; not the hub's own :data:`HUB_GENERATED_FILES`)."""
    problems, hashed = compare_remote(staged, remote)
    manifest = next(item for item in plan if item.path == MANIFEST_FILE)
    there = remote.get(MANIFEST_FILE)
    if there is not None and there["size"] != manifest.size:
        problems.append(f"{MANIFEST_FILE}: {there['size']} bytes on the hub, {manifest.size} uploaded")
    return problems, hashed, sorted(set(remote) - {item.path for item in plan} - HUB_GENERATED_FILES)


def publish_folder(folder: str | os.PathLike, model_id: str, *, private: bool = False, sync: bool = False,
                   commit_message: str | None = None) -> PublishResult:
    """Create the repository (if needed; an existing one keeps its visibility), upload exactly
    :func:`upload_plan`'s files (from :func:`staged_upload`), verify the listing. ``sync`` also deletes the hub's
    files that the plan does not list."""
    from modelscope.hub.api import HubApi

    check_model_id(model_id)
    plan = upload_plan(folder)
    token = require_token()
    with staged_upload(folder, plan) as staged:
        api = HubApi(token=token)
        created = api.create_repo(model_id, visibility="private" if private else "public",
                                  license=_card_license(staged), exist_ok=True) is not None
        api.upload_folder(repo_id=model_id, folder_path=str(staged), commit_message=commit_message or
                          f"facemask publish: {len(plan)} files", use_cache=False, sync_remote_repo=sync)
        remote = remote_files(model_id, token)
        problems, hashed, extras = check_remote(staged, remote, plan)
    return PublishResult(plan, problems, hashed, extras, created)


def _card_license(folder: Path) -> str | None:
    from .model_card import read_front_matter

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    value = read_front_matter(readme.read_text(encoding="utf-8")).get("license")
    return str(value) if value else None
