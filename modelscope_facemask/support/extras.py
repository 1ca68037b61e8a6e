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


#: every optional extra -> the (module, distribution) pairs it installs (setup.py's extras_require)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "onnx": (("onnxruntime", "onnxruntime"),),
    "openvino": (("openvino", "openvino"),),
    "gallery": (("faiss", "faiss-cpu"), ("pyarrow", "pyarrow")),
    "ray": (("ray", "ray"), ("pyarrow", "pyarrow")),
    "huggingface": (("huggingface_hub", "huggingface-hub"),),
    "serve": (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"),
              ("python_multipart", "python-multipart")),
}


def require_extra(extra: str, feature: str) -> None:
    """Import every module of ``extra`` (:data:`EXTRAS`), or raise MissingExtraError with the pip command: the check
    a command makes before any work."""
    for module, _ in EXTRAS[extra]:
        require(module, extra, feature)


def extras_status() -> list[dict[str, object]]:
    """Every package of every extra, once: ``{"package", "module", "extras", "version"}`` with ``version`` None when
    it is missing (found without importing it: ``env`` stays fast)."""
    import importlib.metadata
    import importlib.util

    found: dict[str, dict[str, object]] = {}
    for extra, packages in EXTRAS.items():
        for module, distribution in packages:
            entry = found.setdefault(distribution, {"package": distribution, "module": module, "extras": [],
                                                    "version": None})
            entry["extras"].append(extra)  # type: ignore[union-attr]
    for entry in found.values():
        try:
            spec = importlib.util.find_spec(str(entry["module"]))
        except (ImportError, ValueError):  # a parent package missing, or a module object without a spec
            spec = None
        if spec is None:
            continue
        try:
            entry["version"] = importlib.metadata.version(str(entry["package"]))
        except importlib.metadata.PackageNotFoundError:  # installed under another distribution (e.g. faiss-gpu)
            entry["version"] = "installed"
    return list(found.values())
