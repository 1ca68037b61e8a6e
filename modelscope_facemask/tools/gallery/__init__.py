"""1:N face identification: a FAISS-backed gallery of enrolled faces, its on-disk folder, enrolment sources and
the NIST FRVT-style identification metrics. Needs the ``[gallery]`` extra (faiss-cpu, pyarrow).

The gallery's classes are imported on first access (PEP 562), so that ``facemask identify --help`` can show
:data:`DEFAULT_THRESHOLD` without importing numpy, pyarrow or FAISS.
"""
from __future__ import annotations

import importlib
from typing import Any

from .identification_metrics import IdentificationEvaluation, identification_metrics

#: placeholder decision threshold (cosine): NOT calibrated for any weights; calibrate with `facemask evaluate --gallery`
DEFAULT_THRESHOLD = 0.4

#: the classes of :mod:`.face_gallery` this package exports (imported on first access)
_FACE_GALLERY_NAMES = frozenset({"Candidate", "FaceGallery", "GalleryModel", "Identification"})


def __getattr__(name: str) -> Any:
    """The gallery's classes, imported on first access."""
    if name not in _FACE_GALLERY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".face_gallery", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted({*globals(), *_FACE_GALLERY_NAMES})


__all__ = ["DEFAULT_THRESHOLD", "Candidate", "FaceGallery", "GalleryModel", "Identification",
           "IdentificationEvaluation", "identification_metrics"]
