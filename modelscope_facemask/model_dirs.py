"""Model folders from local paths or hub ids (through ModelScope's own client and cache)."""
from __future__ import annotations

import os

from .log import logger


def local_model_dir(model_name_or_path: str | os.PathLike, revision: str | None = None, *, prefer_cache: bool = False) -> str:
    """``model_name_or_path`` if it is a local folder, else ModelScope's snapshot of that hub id.

    With ``prefer_cache=True`` a snapshot already in ModelScope's cache is used without contacting the hub (used for
    the detector a model card names, so that a model loaded from a local folder works offline).
    """
    path = os.fspath(model_name_or_path)
    if os.path.isdir(path):
        return path
    from modelscope.hub.snapshot_download import snapshot_download

    kwargs = {"revision": revision} if revision else {}
    if prefer_cache:
        try:
            return snapshot_download(path, local_files_only=True, **kwargs)
        except Exception as exc:  # not cached (ModelScope raises ValueError / FileNotFoundError here)
            logger.debug("%s not in the ModelScope cache (%s); downloading", path, exc)
    return snapshot_download(path, **kwargs)
