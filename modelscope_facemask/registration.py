"""Registration with ModelScope on ``import modelscope_facemask``.

The Model, Preprocessor and Pipeline register themselves under this plugin's own names (``metainfo.py``). The
pipeline is also registered under the built-in name ``resnet-face-recognition-facemask`` so that
``pipeline(Tasks.face_recognition, 'damo/cv_resnet_face-recognition_facemask')`` builds ours: ModelScope imports
the built-in module behind a name lazily right before building, so that module is imported first and then
overridden with ``force=True``. The built-in module imports scikit-image at import time; where scikit-image is not
installed that import fails, and ModelScope's lazy index entry for the name is pointed at our module instead
(otherwise every ``pipeline()`` call for the official card would fail with ``No module named 'skimage'``).
"""
from __future__ import annotations

import importlib
import logging

from modelscope.pipelines.builder import PIPELINES
from modelscope.utils.constant import Tasks
from modelscope.utils.import_utils import LazyImportModule

from .metainfo import Pipelines
from .modelscope_adapters import model as _model  # noqa: F401  (registers FaceMaskModel)
from .modelscope_adapters import preprocessor as _preprocessor  # noqa: F401  (registers FaceMaskPreprocessor)
from .modelscope_adapters.pipeline import FaceMaskPipeline

logger = logging.getLogger("modelscope_facemask")

BUILTIN_MODULE = "modelscope.pipelines.cv.mask_face_recognition_pipeline"
BUILTIN_SIGNATURE = ("PIPELINES", Tasks.face_recognition, Pipelines.builtin_facemask)


def _redirect_lazy_index() -> None:
    """Point ModelScope's lazy-import index entry for the built-in name at our pipeline module."""
    entry = LazyImportModule.get_ast_index()["index"].get(BUILTIN_SIGNATURE)
    if entry is not None:
        entry["module"] = FaceMaskPipeline.__module__
        entry["imports"] = []


def override_builtin_pipeline() -> None:
    """Make the built-in pipeline name build :class:`FaceMaskPipeline` (idempotent)."""
    try:
        importlib.import_module(BUILTIN_MODULE)
    except ImportError as exc:  # scikit-image (or another optional dependency of the built-in) is missing
        logger.debug("built-in %s not importable (%s); redirecting its lazy index entry", BUILTIN_MODULE, exc)
        _redirect_lazy_index()
    PIPELINES.register_module(Tasks.face_recognition, module_name=Pipelines.builtin_facemask, force=True)(FaceMaskPipeline)


override_builtin_pipeline()
