"""Load ``hf://OWNER/NAME[@REVISION]`` model repositories from huggingface_hub's cache, verified like ModelScope's.

``snapshot_download`` into huggingface_hub's cache (``HF_HOME``/``HF_HUB_CACHE``), which honours
``HF_HUB_OFFLINE=1`` (then only the cache is used); the snapshot is then verified against its ``manifest.json``
(every file), so a tampered or truncated file is refused with :class:`~modelscope_facemask.errors.CheckpointError`.
The token comes from ``HF_TOKEN`` or ``huggingface-cli login`` (``huggingface_hub.get_token``); it is never printed.
huggingface_hub is imported lazily: nothing here is needed by ModelScope-only users.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError, HubDownloadError, ModelSourceError
from ..support.extras import require
from .manifest import MANIFEST_FILE, read_manifest, verify_manifest

HF_SCHEME = "hf://"
HF_TOKEN_ENV = "HF_TOKEN"
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
