"""The import paths of modules that moved into the layer folders: kept one more release, with a warning.

``import modelscope_facemask.demo``, ``from modelscope_facemask.gallery import FaceGallery``,
``from modelscope_facemask.hub.model_folders import hf_model_dir`` and every other path in :data:`MOVED_MODULES`
keep working: the old name is bound to the very module object at the new path (no second copy of a module, so
classes, registries and monkeypatching are shared), and a :class:`DeprecationWarning` names the new path.
``python -m OLD.PATH`` runs the new module as well.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import CodeType, ModuleType

PACKAGE = __name__.rsplit(".", 1)[0]

MOVED_MODULES = {  # old path below the package -> new path (a longer entry wins over a moved package)
    "atomic_files": "support.atomic_files",
    "file_locks": "support.file_locks",
    "json_output": "support.json_output",
    "log": "support.log",
    "extras": "support.extras",
    "printable": "support.printable",
    "checkpoints": "model_files.checkpoints",
    "onnx_convert": "model_files.onnx_convert",
    "assets": "model_files.assets",
    "hub.manifest": "model_files.manifest",
    "hub.model_folders": "model_files.model_folders",
    "devices": "engines.devices",
    "precision": "engines.precision",
    "configuration": "modelscope_adapters.configuration",
    "regress": "tools.regress",
    "evaluate": "tools.evaluate",
    "masks": "tools.masks",
    "annotate": "tools.annotate",
    "drawing": "tools.drawing",
    "demo": "tools.demo",
    "testing.synthetic_weights": "tools.demo.synthetic_weights",
    "face_rows": "tools.corpus.face_rows",
    "rows_lock": "tools.corpus.rows_lock",
    "embedding_runs": "tools.corpus.embedding_runs",
    "ray_embed": "tools.corpus.ray_embed",
}
MOVED_PACKAGES = {  # old package -> new package; each submodule follows
    "gallery": "tools.gallery",
    "hub": "tools.hub",
}


def new_module_name(old: str) -> str | None:
    """The current dotted name of the module once importable as ``old``; None when ``old`` did not move.
    The longest moved prefix decides, so the submodules of a moved module follow it."""
    if not old.startswith(PACKAGE + "."):
        return None
    parts = old[len(PACKAGE) + 1:].split(".")
    for end in range(len(parts), 0, -1):
        head = ".".join(parts[:end])
        moved = MOVED_MODULES.get(head) or MOVED_PACKAGES.get(head)
        if moved:
            return ".".join([PACKAGE, moved, *parts[end:]])
    return None


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def _warn(self) -> None:
        warnings.warn(f"{self.old} moved to {self.new}; the old import path works until the next release",
                      DeprecationWarning, stacklevel=4)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        self._warn()
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already imported."""

    def get_code(self, fullname: str) -> CodeType:
        """``python -m OLD.PATH``: run the new module as ``__main__``."""
        self._warn()
        return compile(f"import runpy\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{self.old}: moved to {self.new}>", "exec")


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old names of moved modules to the modules at their new paths."""

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        new = new_module_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname, new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
