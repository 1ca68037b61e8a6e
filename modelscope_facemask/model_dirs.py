"""Model folders from local paths or hub ids (through ModelScope's own client and cache)."""
from __future__ import annotations

import os


def local_model_dir(model_name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """``model_name_or_path`` if it is a local folder, else the snapshot ModelScope downloads (or has cached)."""
    path = os.fspath(model_name_or_path)
    if os.path.isdir(path):
        return path
    from modelscope.hub.snapshot_download import snapshot_download

    return snapshot_download(path, revision=revision) if revision else snapshot_download(path)
