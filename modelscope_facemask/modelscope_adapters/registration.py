"""Registration with ModelScope on ``import modelscope_facemask``.

The Model, Preprocessor and Pipeline register themselves under this plugin's own names (``metainfo.py``). The
pipeline is also registered under the built-in name ``resnet-face-recognition-facemask`` so that
``pipeline(Tasks.face_recognition, 'damo/cv_resnet_face-recognition_facemask')`` builds ours: ModelScope imports
the built-in module behind a name lazily right before building, so that module is imported first and then
overridden with ``force=True``. The built-in module imports scikit-image at import time; where scikit-image is not
installed that import fails, and ModelScope's lazy index entry for the name is pointed at our module instead
(otherwise every ``pipeline()`` call for the official card would fail with ``No module named 'skimage'``).

ModelScope also consults that lazy index (built from its own source tree) to decide whether ``Model.from_pretrained``
can build a registered type at all (``can_load_by_ms``); a plugin's types are not in it, so each registered name
is added to the index, pointing at the module that registered it.

``pipeline()`` reads the model folder (path check, configuration.json) before any plugin code runs;
:mod:`builder_guards` wraps those two reads so that a missing folder or a broken configuration.json gives this
package's clear errors instead of ModelScope's raw ones (only where ModelScope itself would fail).
"""
from __future__ import annotations

import importlib

from modelscope.pipelines.builder import PIPELINES
from modelscope.utils.constant import Fields, Tasks
from modelscope.utils.import_utils import LazyImportModule

from . import builder_guards
from ..support.log import logger
from ..metainfo import Models, Pipelines, Preprocessors
from .model import FaceMaskModel
from .pipeline import FaceMaskPipeline
from .preprocessor import FaceMaskPreprocessor

BUILTIN_MODULE = "modelscope.pipelines.cv.mask_face_recognition_pipeline"
BUILTIN_SIGNATURE = ("PIPELINES", Tasks.face_recognition, Pipelines.builtin_facemask)


def index_in_lazy_import(signature: tuple[str, str, str], cls: type) -> None:
    """Make ModelScope's lazy-import index resolve ``signature`` to the module defining ``cls``."""
    module = importlib.import_module(cls.__module__)
    LazyImportModule.get_ast_index()["index"][signature] = {
        "filepath": module.__file__, "imports": [], "module": cls.__module__,
    }


def override_builtin_pipeline() -> None:
    """Make the built-in pipeline name build :class:`FaceMaskPipeline` (idempotent)."""
    try:
        importlib.import_module(BUILTIN_MODULE)
    except ImportError as exc:  # scikit-image (or another optional dependency of the built-in) is missing
        logger.debug("built-in %s not importable (%s); redirecting its lazy index entry", BUILTIN_MODULE, exc)
        index_in_lazy_import(BUILTIN_SIGNATURE, FaceMaskPipeline)
    PIPELINES.register_module(Tasks.face_recognition, module_name=Pipelines.builtin_facemask, force=True)(FaceMaskPipeline)


index_in_lazy_import(("MODELS", Tasks.face_recognition, Models.facemask), FaceMaskModel)
index_in_lazy_import(("PREPROCESSORS", Fields.cv, Preprocessors.facemask_preprocessor), FaceMaskPreprocessor)
index_in_lazy_import(("PIPELINES", Tasks.face_recognition, Pipelines.facemask), FaceMaskPipeline)
override_builtin_pipeline()
builder_guards.install()
