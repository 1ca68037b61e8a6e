"""1:N face identification: a FAISS-backed gallery of enrolled faces, its on-disk folder, enrolment sources and
the NIST FRVT-style identification metrics. Needs the ``[gallery]`` extra (faiss-cpu, pyarrow)."""
from __future__ import annotations

from .face_gallery import DEFAULT_THRESHOLD, Candidate, FaceGallery, GalleryModel, Identification
from .identification_metrics import IdentificationEvaluation, identification_metrics

__all__ = ["DEFAULT_THRESHOLD", "Candidate", "FaceGallery", "GalleryModel", "Identification",
           "IdentificationEvaluation", "identification_metrics"]
