"""modelscope-facemask: FaceMask masked-face recognition as a ModelScope plugin.

``import modelscope_facemask`` registers the FaceMask Model, Preprocessor and Pipeline with ModelScope and makes the
built-in pipeline name ``resnet-face-recognition-facemask`` build this package's pipeline, in either order::

    from modelscope.pipelines import pipeline          import modelscope_facemask
    import modelscope_facemask                         from modelscope.pipelines import pipeline

The import itself stays light (no ModelScope, no torch): when ModelScope is imported already, the plugin registers
at once; otherwise a one-shot import hook registers it right after ModelScope's own import, whoever imports it
(:mod:`.modelscope_adapters.registration`). ``FaceMaskModel``, ``FaceMaskPipeline`` and ``FaceMaskPreprocessor``
are imported on first access (PEP 562), which imports ModelScope and torch. So ``facemask --help`` and a command
line's usage errors never load a network library.

The layers and where each concern lives: ARCHITECTURE.md; modules that moved keep their old import paths one release
(``_old_import_paths``).
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _old_import_paths
from .version import __version__

_old_import_paths.install()
from .modelscope_adapters import registration  # noqa: E402  (ModelScope's registries, now or once it is imported)

registration.install()

#: the classes this package exports -> the module defining each (imported on first access)
_LAZY_CLASSES = {
    "FaceMaskModel": ".modelscope_adapters.model",
    "FaceMaskPipeline": ".modelscope_adapters.pipeline",
    "FaceMaskPreprocessor": ".modelscope_adapters.preprocessor",
}


def __getattr__(name: str) -> Any:
    """``FaceMaskModel``, ``FaceMaskPipeline`` and ``FaceMaskPreprocessor``, imported on first access."""
    module = _LAZY_CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported classes included."""
    return sorted({*globals(), *_LAZY_CLASSES})


__all__ = ["FaceMaskModel", "FaceMaskPipeline", "FaceMaskPreprocessor", "__version__"]
