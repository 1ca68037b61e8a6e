"""The Hugging Face Hub side: publish a ``facemask pack`` folder with ``huggingface_hub.HfApi`` and load ``hf://``
repositories from huggingface_hub's cache, with the same ``manifest.json`` guarantees as on ModelScope.

Publishing: ``create_repo(exist_ok=True)`` then one ``create_commit`` with a ``CommitOperationAdd`` for each file of
:func:`~modelscope_facemask.hub.publish.upload_plan` and nothing else (read from
:func:`~modelscope_facemask.hub.publish.staged_upload`'s private copy, so hidden files, links and unlisted files are
refused before anything is sent, as on ModelScope), then the remote listing
(``list_repo_tree(recursive=True, expand=True)``) is compared with the plan: every file present with its size,
and the sha256 of every LFS file (the listing's ``lfs.oid``; regular files only have a git blob id, so their
sha256 is checked by downloading nothing: their git blob id is recomputed from the uploaded bytes instead); files on
the hub that the plan does not list are reported.
The token comes from ``HF_TOKEN`` or ``huggingface-cli login`` (``huggingface_hub.get_token``); it is never printed.

Loading: ``snapshot_download`` into huggingface_hub's cache (``HF_HOME``/``HF_HUB_CACHE``), which honours
``HF_HUB_OFFLINE=1`` (then only the cache is used); the snapshot is then verified against its ``manifest.json``
(every file), so a tampered or truncated file is refused with :class:`~modelscope_facemask.errors.CheckpointError`.
huggingface_hub is imported lazily: nothing here is needed by ModelScope-only users.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError, HubDownloadError, ModelSourceError
from ..extras import require
from .manifest import MANIFEST_FILE, read_manifest, verify_manifest

HF_SCHEME = "hf://"
HF_TOKEN_ENV = "HF_TOKEN"
HF_TOKEN_HELP = ("set HF_TOKEN to a write token of the owning account (https://huggingface.co/settings/tokens) "
                 "or run `hf auth login`; the token is never printed")
#: ``hf://OWNER/NAME`` or ``hf://OWNER/NAME@REVISION`` (a branch, tag or commit sha)
HF_REF_PATTERN = re.compile(r"hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
                            r"(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?")


@dataclass(frozen=True)
class HfReference:
    """A parsed ``hf://OWNER/NAME[@REVISION]``."""

    repo_id: str
    revision: str | None


def is_hf_reference(text: Any) -> bool:
    """True when ``text`` starts with ``hf://`` (whether or not the rest is valid)."""
    return isinstance(text, str) and text.startswith(HF_SCHEME)


def parse_hf_reference(text: str) -> HfReference:
    """``hf://OWNER/NAME[@REVISION]`` -> :class:`HfReference`; :class:`ModelSourceError` for anything else."""
    match = HF_REF_PATTERN.fullmatch(text or "")
    if match is None or ".." in text:
        raise ModelSourceError(f"{text!r} is not a Hugging Face reference: use hf://OWNER/NAME or "
                               "hf://OWNER/NAME@REVISION (letters, digits, '.', '_', '-')")
    return HfReference(match["repo"], match["revision"])


def _require_hub() -> None:
    """huggingface_hub must be importable (ModelScope installs it through ``datasets``; else the extra does)."""
    require("huggingface_hub", "huggingface", "the Hugging Face Hub")


def hf_token() -> str | None:
    """The token huggingface_hub would use: ``HF_TOKEN``, else the stored login (None when neither)."""
    _require_hub()
    from huggingface_hub import get_token

    token = get_token()
    return token.strip() if token and token.strip() else None


def hf_endpoint() -> str:
    """The Hugging Face endpoint in use (``HF_ENDPOINT``, default https://huggingface.co)."""
    _require_hub()
    from huggingface_hub import constants

    return constants.ENDPOINT


def remote_listing(repo_id: str, token: str | None, revision: str | None = None) -> dict[str, dict[str, Any]]:
    """``{path: {"size", "sha256" (LFS files, else None), "git_oid"}}`` of the files of ``repo_id`` on the hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token or False)
    entries = api.list_repo_tree(repo_id, revision=revision, recursive=True, expand=True)
    return {e.path: {"size": e.size, "sha256": e.lfs.sha256 if e.lfs else None, "git_oid": e.blob_id}
            for e in entries if isinstance(e, RepoFile)}


@dataclass(frozen=True)
class HfPublishResult:
    """What the Hugging Face Hub holds after the upload, compared with the manifest."""

    url: str
    commit: str | None
    problems: list[str]
    hashes_checked: int
    remote_extras: list[str]
    created: bool


def publish_to_hf(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                  commit_message: str | None = None) -> HfPublishResult:
    """Create ``repo_id`` if needed (an existing one keeps its visibility), upload exactly the files of
    :func:`~modelscope_facemask.hub.publish.upload_plan` in one commit, verify the listing against that plan.

    The caller has checked the token; a folder that cannot be published raises
    :class:`~modelscope_facemask.hub.publish.PublishError` before anything is sent.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from .publish import check_remote, staged_upload, upload_plan

    plan = upload_plan(folder)
    token = hf_token()
    api = HfApi(token=token or False)
    with staged_upload(folder, plan) as staged:
        try:
            api.repo_info(repo_id, token=token or False)
            created = False
        except RepositoryNotFoundError:
            created = True
        except HfHubHTTPError:
            created = True  # unknown: create_repo(exist_ok=True) decides
        url = api.create_repo(repo_id, private=private if created else None, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(staged / item.path))
                      for item in plan]
        info = api.create_commit(repo_id, operations, commit_message=commit_message or "facemask publish")
        remote = remote_listing(repo_id, token)
        problems, hashed, extras = check_remote(staged, remote, plan)
    return HfPublishResult(str(url), getattr(info, "oid", None), problems, hashed, extras, created)


def hf_snapshot(reference: str, *, what: str = "model") -> str:
    """The verified local snapshot folder of ``hf://OWNER/NAME[@REVISION]`` in huggingface_hub's cache.

    Online: ``snapshot_download`` fetches what the cache lacks. With ``HF_HUB_OFFLINE=1`` only the cache is used.
    Every file listed in the snapshot's ``manifest.json`` is then checked (size and sha256): a file that differs
    raises :class:`CheckpointError` naming it. Download failures raise :class:`HubDownloadError`.
    """
    ref = parse_hf_reference(reference)
    _require_hub()
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    endpoint = constants.ENDPOINT
    try:
        folder = snapshot_download(ref.repo_id, revision=ref.revision, token=hf_token() or False)
    except RepositoryNotFoundError:
        raise HubDownloadError(f"{what} {reference!r} does not exist on the Hugging Face Hub at {endpoint} (or is "
                               "private and HF_TOKEN is not a token that may read it): check the id") from None
    except RevisionNotFoundError:
        raise HubDownloadError(f"{what} {reference!r}: revision {ref.revision or 'main'!r} does not exist on {endpoint}; "
                               "use a branch, tag or commit sha of the repository") from None
    except LocalEntryNotFoundError as exc:
        offline = constants.HF_HUB_OFFLINE
        why = ("HF_HUB_OFFLINE=1 and it is not in the huggingface_hub cache" if offline else
               f"the Hugging Face Hub at {endpoint} cannot be reached and it is not in the huggingface_hub cache")
        raise HubDownloadError(f"cannot load {what} {reference!r}: {why} ({constants.HF_HUB_CACHE}); download it "
                               "once with the hub reachable, or pass a local folder") from exc
    except Exception as exc:  # noqa: BLE001 - httpx errors, HfHubHTTPError, OSError
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise HubDownloadError(f"cannot download {what} {reference!r} from the Hugging Face Hub at {endpoint}: "
                               f"{type(exc).__name__}: {cause}") from exc
    if read_manifest(folder) is None:
        raise CheckpointError(f"{what} {reference!r} has no {MANIFEST_FILE}: only repositories made by "
                              "`facemask pack` can be loaded with hf:// (their files are verified on load)")
    verify_manifest(folder)
    return folder
