"""Registration with ModelScope, without importing ModelScope before the user does (``import modelscope_facemask``).

:func:`install` (run by ``modelscope_facemask/__init__.py``) ties the plugin to ModelScope at the moment ModelScope
is imported: at once when ``modelscope`` is already imported, otherwise from a one-shot hook on ``sys.meta_path``
(:class:`AfterImportHook`) that runs right after a watched ModelScope module's code has run, in the same import:

* after ``modelscope`` (the top-level package): :func:`index_facemask_modules` adds this plugin's names to
  ModelScope's lazy-import index (built from ModelScope's own source tree), each pointing at the module of ours that
  registers it when imported. ModelScope imports the module behind a name right before it builds that name
  (``build_from_cfg``), and also consults the index to decide whether ``Model.from_pretrained`` can build a type at
  all (``can_load_by_ms``). The built-in pipeline name ``resnet-face-recognition-facemask`` is pointed at
  ``pipeline.py``, whose import ends with :func:`override_builtin_pipeline`: the built-in module is imported first
  (it registers the built-in class, and imports scikit-image: where that is missing, the failure is only logged at
  DEBUG) and then overridden with ``force=True``. So ``pipeline(Tasks.face_recognition,
  'damo/cv_resnet_face-recognition_facemask')`` builds :class:`FaceMaskPipeline`, and the class, once imported, is
  always registered under both names.
* after ``modelscope.pipelines.builder`` (where ``pipeline()`` lives): :func:`builder_guards.install
  <modelscope_facemask.modelscope_adapters.builder_guards.install>` wraps the two reads ``pipeline()`` makes before
  any plugin code runs, so that a missing folder or a broken configuration.json gives this package's clear errors.

The hooks import none of this package's Model, Preprocessor or Pipeline modules, so they cannot meet one of them
half-imported (``pipeline.py`` itself imports ModelScope, which fires the first hook). The classes themselves are
imported lazily: by ModelScope through its index, or by ``from modelscope_facemask import FaceMaskPipeline``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable, Sequence

from ..metainfo import Models, Pipelines, Preprocessors
from ..support.log import logger

BUILTIN_MODULE = "modelscope.pipelines.cv.mask_face_recognition_pipeline"
_ADAPTERS = __name__.rsplit(".", 1)[0]
#: (registry, group, registered name) in ModelScope's lazy-import index -> the module of ours that registers it
LAZY_INDEX = {
    ("MODELS", "face-recognition", Models.facemask): f"{_ADAPTERS}.model",
    ("PREPROCESSORS", "cv", Preprocessors.facemask_preprocessor): f"{_ADAPTERS}.preprocessor",
    ("PIPELINES", "face-recognition", Pipelines.facemask): f"{_ADAPTERS}.pipeline",
    ("PIPELINES", "face-recognition", Pipelines.builtin_facemask): f"{_ADAPTERS}.pipeline",
}


def index_in_lazy_import(signature: tuple[str, str, str], module_name: str) -> None:
    """Make ModelScope's lazy-import index resolve ``signature`` to ``module_name`` (found, not imported)."""
    from modelscope.utils.import_utils import LazyImportModule

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot find {module_name} to index it for ModelScope", name=module_name)
    LazyImportModule.get_ast_index()["index"][signature] = {
        "filepath": spec.origin, "imports": [], "module": module_name,
    }


def index_facemask_modules() -> None:
    """Add every name of :data:`LAZY_INDEX` to ModelScope's lazy-import index (idempotent)."""
    from modelscope.utils.constant import Fields, Tasks

    if (Tasks.face_recognition, Fields.cv) != ("face-recognition", "cv"):  # the groups LAZY_INDEX is written with
        raise ImportError(f"ModelScope renamed Tasks.face_recognition or Fields.cv ({Tasks.face_recognition!r}, "
                          f"{Fields.cv!r}); this modelscope-facemask cannot register with it")
    for signature, module_name in LAZY_INDEX.items():
        index_in_lazy_import(signature, module_name)


def override_builtin_pipeline(pipeline_class: type) -> None:
    """Make the built-in pipeline name build ``pipeline_class`` (idempotent): the built-in module is imported first,
    so that its own registration can never come after ours."""
    from modelscope.pipelines.builder import PIPELINES
    from modelscope.utils.constant import Tasks

    try:
        importlib.import_module(BUILTIN_MODULE)
    except ImportError as exc:  # scikit-image (or another optional dependency of the built-in) is missing
        logger.debug("built-in %s not importable (%s); its lazy index entry points at ours", BUILTIN_MODULE, exc)
    PIPELINES.register_module(Tasks.face_recognition, module_name=Pipelines.builtin_facemask,
                              force=True)(pipeline_class)


def _install_builder_guards() -> None:
    """:func:`builder_guards.install`, imported only once ModelScope's pipeline builder is."""
    from . import builder_guards

    builder_guards.install()


class _RunAfterExec:
    """A module loader that runs the real loader, then the hook's callbacks for that module."""

    def __init__(self, loader: Any, hook: "AfterImportHook", name: str) -> None:
        self.loader, self.hook, self.name = loader, hook, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """The real loader's module (None: the default one)."""
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run the module's code, put the real loader back on its spec, then run the callbacks."""
        self.loader.exec_module(module)
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.hook.run(self.name)

    def __getattr__(self, name: str) -> Any:  # is_package, get_code, get_resource_reader, ...: the real loader's
        return getattr(self.loader, name)


class AfterImportHook(importlib.abc.MetaPathFinder):
    """Runs callbacks right after a watched module's code has run, once per module; leaves ``sys.meta_path`` when
    nothing is left to watch. The spec itself comes from the finders after this one."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[], None]]] = {}

    def watch(self, name: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the module ``name`` has been imported."""
        self.callbacks.setdefault(name, []).append(callback)

    def run(self, name: str) -> None:
        """Run (and forget) the callbacks of ``name``; an exception propagates to the import that ran it."""
        callbacks = self.callbacks.pop(name, [])
        if not self.callbacks and self in sys.meta_path:
            sys.meta_path.remove(self)
        for callback in callbacks:
            callback()

    def _later_finders(self) -> Sequence[Any]:
        finders = list(sys.meta_path)
        return finders[finders.index(self) + 1:] if self in finders else finders

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give for a watched module, with its loader wrapped; None for the others."""
        if fullname not in self.callbacks:
            return None
        for finder in self._later_finders():
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None and finder is not self else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module") and not isinstance(spec.loader,
                                                                                             _RunAfterExec):
            spec.loader = _RunAfterExec(spec.loader, self, fullname)
        return spec


def _hook() -> AfterImportHook:
    """The process's hook, placed right before the standard path finder (the finders before it, such as the
    old-import-paths finder, stay first)."""
    for finder in sys.meta_path:
        if isinstance(finder, AfterImportHook):
            return finder
    hook = AfterImportHook()
    position = next((i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder), len(sys.meta_path))
    sys.meta_path.insert(position, hook)
    return hook


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """``callback()`` now when the module ``name`` is imported already, else right after it is."""
    if name in sys.modules:
        callback()
    else:
        _hook().watch(name, callback)


_installed = False


def install() -> None:
    """Register with ModelScope now, or as soon as ModelScope is imported (once per process)."""
    global _installed
    if not _installed:
        when_imported("modelscope", index_facemask_modules)
        when_imported("modelscope.pipelines.builder", _install_builder_guards)
        _installed = True
