"""Publish a ``facemask pack`` folder to the Hugging Face Hub with ``huggingface_hub.HfApi``, with the same
``manifest.json`` guarantees as on ModelScope (loading ``hf://`` repositories: ``model_files.huggingface_download``).

Publishing: ``create_repo(exist_ok=True)`` then one ``create_commit`` with a ``CommitOperationAdd`` for each file of
:func:`~modelscope_facemask.tools.hub.publish.upload_plan` and nothing else (read from
:func:`~modelscope_facemask.tools.hub.publish.staged_upload`'s private copy, so hidden files, links and unlisted files
are refused before anything is sent, as on ModelScope), then the remote listing
(``list_repo_tree(recursive=True, expand=True)``) is compared with the plan: every file present with its size,
and the sha256 of every LFS file (the listing's ``lfs.oid``; regular files only have a git blob id, so their
sha256 is checked by downloading nothing: their git blob id is recomputed from the uploaded bytes instead); files on
the hub that the plan does not list are reported.
The token comes from ``HF_TOKEN`` or ``huggingface-cli login`` (``huggingface_hub.get_token``); it is never printed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...model_files.huggingface_download import hf_token

HF_TOKEN_HELP = ("set HF_TOKEN to a write token of the owning account (https://huggingface.co/settings/tokens) "
                 "or run `hf auth login`; the token is never printed")


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
    :func:`~modelscope_facemask.tools.hub.publish.upload_plan` in one commit, verify the listing against that plan.

    The caller has checked the token; a folder that cannot be published raises
    :class:`~modelscope_facemask.tools.hub.publish.PublishError` before anything is sent.
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


