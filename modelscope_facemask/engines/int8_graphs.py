"""int8 graphs (``precision='int8'``): OpenVINO IR quantized by ``facemask quantize`` (NNCF post-training
quantization), read only from the folder that command wrote (``engine_dir``), never quantized on first use.

The folder holds ``recognizer.xml``/``.bin`` (int8), ``detector.xml``/``.bin`` (int8, or fp32 when quantize was
told ``--detector fp32``), ``fidelity.json`` and ``manifest.json``: the package's file table plus
``"precision": "int8"``, ``int8_networks`` (which graphs are int8), the sha256 of the fp32 weights each graph was
made from, the calibration set's hash and the versions of NNCF, OpenVINO and this package. A folder made from other
weights, or a ``facemask export`` folder (fp32), is refused with a
:class:`~modelscope_facemask.errors.ConfigurationError` naming both hashes and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigurationError
from . import QUANTIZE_HINT
from .graph_manifest import graph_folder_problem, read_graph_manifest

INT8 = "int8"
QUANTIZE_OUTPUT = "quantize"
GRAPH_FORMAT = "openvino"


def is_int8_manifest(manifest: dict[str, Any]) -> bool:
    """True for the manifest of a ``facemask quantize`` folder."""
    return manifest.get("precision") == INT8


def int8_networks(manifest: dict[str, Any]) -> dict[str, bool]:
    """Which networks of a quantize folder are int8 (kind -> bool)."""
    networks = manifest.get("int8_networks")
    return {str(k): bool(v) for k, v in networks.items()} if isinstance(networks, dict) else {}


def int8_graph(folder: str | os.PathLike, kind: str, sha256: str) -> tuple[Path, bool]:
    """``kind``'s graph in a ``facemask quantize`` folder and whether it is int8, checked: the folder is one
    (not an fp32 ``facemask export`` folder), it was made from the fp32 weights with ``sha256``, and its files
    match the manifest."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    if not folder.is_dir():
        raise ConfigurationError(f"engine_dir {str(folder)!r} is not a folder: for precision 'int8' pass the folder "
                                 f"written by {QUANTIZE_HINT}")
    manifest = read_graph_manifest(folder)
    if not is_int8_manifest(manifest) or manifest["graph_format"] != GRAPH_FORMAT:
        raise ConfigurationError(f"engine_dir {str(folder)!r} holds {manifest['graph_format']} fp32 graphs (written "
                                 f"by `facemask export`), not int8 ones: for precision 'int8' run {QUANTIZE_HINT}; "
                                 "or use this folder with precision='fp32'")
    source = manifest["source_weights_sha256"].get(kind)
    if source is None:
        raise ConfigurationError(f"engine_dir {str(folder)!r} has no {kind} graph: quantize the model again with "
                                 f"{QUANTIZE_HINT}")
    if source != sha256:
        raise ConfigurationError(
            f"engine_dir {str(folder)!r} was quantized from other {kind} weights (sha256 {source}) than the ones "
            f"loaded (sha256 {sha256}): quantize these weights with {QUANTIZE_HINT} into a new folder, or pass the "
            "folder made from them")
    problem = graph_folder_problem(folder, kind, GRAPH_FORMAT)
    if problem is not None:
        raise CheckpointError(f"engine_dir {str(folder)!r}: {problem}; quantize again with {QUANTIZE_HINT}")
    return folder / f"{kind}.xml", int8_networks(manifest).get(kind, False)


def refuse_int8_folder(folder: str | os.PathLike, manifest: dict[str, Any], precision: str) -> None:
    """A ``facemask quantize`` folder given for fp32/bf16 would run int8 graphs under another name: refused."""
    if is_int8_manifest(manifest):
        raise ConfigurationError(f"engine_dir {str(folder)!r} holds int8 graphs (written by `facemask quantize`), "
                                 f"but precision {precision!r} was asked for: pass precision='int8' (--precision "
                                 "int8) to run them, or a `facemask export` folder for fp32/bf16")
