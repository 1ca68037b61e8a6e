"""Keyword arguments of the FaceMask pipeline: one type check for ``pipeline(...)`` and per call; unknown names.

``pipeline(..., **kwargs)``: an unknown keyword is logged at WARNING, naming it and the closest option, and ignored
(a future ModelScope may pass keywords of its own: the pipeline keeps working). Per call (``p(img, **kwargs)``) an
unknown keyword raises :class:`~modelscope_facemask.errors.UnknownOptionError` before any work is done. A known
option of the wrong type (e.g. ``use_det='false'``, which ``bool()`` would turn into ``True``) raises
:class:`~modelscope_facemask.errors.ConfigurationError` in both places.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, Mapping

import numpy as np

from ..engines.devices import check_device_type
from ..engines import check_engine
from ..errors import ConfigurationError, UnknownOptionError
from ..faces.choose import validate_max_faces
from ..faces.detector import check_batched_postprocess, check_det_max_side, check_pad_batches, optional_bool
from ..faces.recognizer import positive_batch_size
from ..engines.precision import check_precision

#: options of ``pipeline(...)`` / ``FaceMaskPipeline(...)`` (besides ``model`` and ``preprocessor``)
PIPELINE_OPTIONS = ("device", "use_det", "max_faces", "detector_model", "batch_size", "precision",
                   "det_max_side", "engine", "engine_dir", "pad_batches", "batched_postprocess")
#: options accepted per call, ``p(img, **options)``
CALL_OPTIONS = ("use_det", "max_faces", "batch_size")
#: keywords ModelScope's ``pipeline()``/``build_from_cfg`` pass to a pipeline class, or its ``Pipeline.__init__``
#: accepts (verified in modelscope 1.40.2 ``pipelines/builder.py`` and ``pipelines/base.py``); accepted quietly
MODELSCOPE_PIPELINE_KEYWORDS = frozenset({
    "trust_remote_code",  # always set by pipeline()
    "config_file", "auto_collate", "device_map", "compile", "compile_options",  # Pipeline.__init__
    "model_revision", "third_party", "external_engine_for_llm", "llm_framework", "ignore_file_pattern",
    "invoked_by", "model_prefetched",  # pipeline()/Model.from_pretrained keywords that some paths forward
})


def check_use_det(value: Any, *, where: str = "use_det") -> bool | None:
    """``None`` (keep the configured value) or a real boolean; a string such as ``'false'`` is refused."""
    return optional_bool(value, where=where, expected="True or False",
                         hint="; pass a boolean (a string such as 'false' would count as true)")


def check_detector_model(value: Any, *, where: str = "detector_model") -> str | None:
    """``None`` or a hub id / local folder given as ``str`` or ``os.PathLike``."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return os.fspath(value)
    raise ConfigurationError(f"{where} must be a RetinaFace hub id ('owner/name') or a local folder path, "
                             f"got {value!r} ({type(value).__name__})")


def check_engine_dir(value: Any, *, where: str = "engine_dir") -> str | None:
    """``None`` (export into the cache on first use) or a folder written by ``facemask export``, as ``str`` or
    ``os.PathLike``."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return os.fspath(value)
    raise ConfigurationError(f"{where} must be a folder written by `facemask export` (str or path), "
                             f"got {value!r} ({type(value).__name__})")


def check_min_face_size(value: Any, *, where: str = "min_face_size") -> float | None:
    """``None`` or a number of pixels >= 0."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ConfigurationError(f"{where} must be a finite number >= 0 (pixels), got {value!r}")
    return float(value)


def check_option(name: str, value: Any) -> Any:
    """Validate one known option's value (``max_faces``: positive int or None; ``batch_size``: positive int)."""
    if name == "use_det":
        return check_use_det(value)
    if name == "max_faces":
        validate_max_faces(value)
        return None if value is None else int(value)
    if name == "batch_size":
        return positive_batch_size(value)
    if name == "device":
        check_device_type(value)
        return value
    if name == "detector_model":
        return check_detector_model(value)
    if name == "min_face_size":
        return check_min_face_size(value)
    if name == "precision":
        return check_precision(value)
    if name == "det_max_side":
        return check_det_max_side(value)
    if name == "pad_batches":
        return check_pad_batches(value)
    if name == "batched_postprocess":
        return check_batched_postprocess(value)
    if name == "engine":
        return check_engine(value)
    if name == "engine_dir":
        return check_engine_dir(value)
    raise ConfigurationError(f"unknown option {name!r}")


def unknown_keyword_message(name: str, known: Iterable[str], where: str) -> str:
    """``where``: unknown keyword ``name``, with the closest known option when there is one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown keyword argument {name!r}{hint} (options: {', '.join(known)})"


def check_call_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Per-call keywords: unknown names raise :class:`UnknownOptionError`, known ones are type-checked.

    ``max_faces`` may be given as ``None`` (all faces); ``use_det``/``batch_size`` ``None`` mean "as configured".
    """
    unknown = [k for k in options if k not in CALL_OPTIONS]
    if unknown:
        raise UnknownOptionError("; ".join(unknown_keyword_message(k, CALL_OPTIONS, "per-call option")
                                           for k in unknown))
    checked = {}
    for name, value in options.items():
        checked[name] = value if (value is None and name != "max_faces") else check_option(name, value)
    return checked
