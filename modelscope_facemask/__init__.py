"""modelscope-facemask: FaceMask masked-face recognition as a ModelScope plugin.

Importing this package registers the FaceMask Model, Preprocessor and Pipeline with ModelScope and makes the
built-in pipeline name ``resnet-face-recognition-facemask`` build this package's pipeline. The layers and where
each concern lives: ARCHITECTURE.md; modules that moved keep their old import paths one release (``_old_import_paths``).
"""
from . import _old_import_paths
from .version import __version__

_old_import_paths.install()
from .modelscope_adapters import registration  # noqa: E402,F401  (registers with ModelScope on import)
from .modelscope_adapters.model import FaceMaskModel  # noqa: E402
from .modelscope_adapters.pipeline import FaceMaskPipeline  # noqa: E402
from .modelscope_adapters.preprocessor import FaceMaskPreprocessor  # noqa: E402

__all__ = ["FaceMaskModel", "FaceMaskPipeline", "FaceMaskPreprocessor", "__version__"]
