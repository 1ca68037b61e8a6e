"""Optional extras: import a module an extra provides, or fail with the pip command that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError

PACKAGE = "modelscope-facemask"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``; if it is not installed, raise MissingExtraError naming ``extra``.

    ``feature`` says what needs it (e.g. "the face gallery"), so the message reads
    "faiss is not installed (needed for the face gallery): pip install 'modelscope-facemask[gallery]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        # Only a missing ``module`` itself (or its top-level package) means "extra not installed"; an ImportError
        # raised inside an installed module (a broken install) is reported as such, still naming the extra.
        top = module.split(".")[0]
        missing = getattr(error, "name", None)
        if missing is not None and missing not in (module, top) and not module.startswith(missing + "."):
            raise MissingExtraError(
                f"{module} is installed but cannot be imported (needed for {feature}): {error}; reinstall it with "
                f"pip install --force-reinstall '{PACKAGE}[{extra}]'"
            ) from error
        raise MissingExtraError(
            f"{module} is not installed (needed for {feature}): pip install '{PACKAGE}[{extra}]'"
        ) from error
