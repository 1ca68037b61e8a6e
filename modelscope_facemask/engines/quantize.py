"""Post-training int8 quantization of an exported OpenVINO graph with NNCF (``nncf.quantize``), for
``facemask quantize``: the fp32 IR is read, its activation ranges are collected on calibration inputs (the network's
own input arrays), and the int8 IR is written with fp32 weights storage for the parts NNCF leaves in floating point.

NNCF's settings: the ``MIXED`` preset (symmetric int8 weights, asymmetric activations; measured on the full synthetic
recognizer against NNCF's default ``PERFORMANCE``: held-out cosine 0.989-0.991 against 0.984-0.990, at the same
speed), fast bias correction on; ``subset_size`` = the number of calibration inputs given. Its progress bars
(rich, on stdout) are kept off stdout so that ``--json`` output stays one document.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from . import require_engine

#: the feature NNCF is needed for, as MissingExtraError names it
FEATURE = "int8 quantization (facemask quantize)"


def require_nncf():
    """Import and return NNCF, or raise ``MissingExtraError`` naming the ``[openvino]`` extra."""
    from ..support.extras import require

    quiet = logging.getLogger("torch.utils.cpp_extension")  # NNCF imports it; it warns about CUDA_HOME on CPUs
    previous = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return require("nncf", "openvino", FEATURE)
    finally:
        quiet.setLevel(previous)


def quantize_openvino(xml_path: str | os.PathLike, inputs: Sequence[np.ndarray], out_xml: str | os.PathLike) -> Path:
    """Quantize the fp32 IR at ``xml_path`` on ``inputs`` (each a float32 NCHW batch the graph accepts) and write
    the int8 IR to ``out_xml`` (+ ``.bin``); returns ``out_xml``."""
    if not inputs:
        raise ValueError("quantization needs at least one calibration input")
    ov = require_engine("openvino")
    nncf = require_nncf()
    model = ov.Core().read_model(str(xml_path))
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in inputs]
    previous = logging.getLogger("nncf").level
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(model, nncf.Dataset(arrays), subset_size=len(arrays),
                                      preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True)
    finally:
        logging.getLogger("nncf").setLevel(previous)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return Path(out_xml)


def quantization_versions() -> dict[str, str]:
    """The versions a quantized folder records: NNCF, OpenVINO and this package."""
    from importlib.metadata import version

    from ..version import __version__

    return {"nncf": version("nncf"), "openvino": version("openvino"), "modelscope-facemask": __version__}
