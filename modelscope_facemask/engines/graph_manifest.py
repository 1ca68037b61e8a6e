"""The ``manifest.json`` of a folder of exported graphs (``facemask export``, ``facemask quantize``, the engine cache):
the package's file table plus the graph format, opset, versions and the sha256 of the weights each graph was
exported from; reading it back and checking a folder's graphs against it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .export import FORMATS, OPSET, graph_files


def write_graph_manifest(folder: str | os.PathLike, output: str, fmt: str, sources: dict[str, str],
                         extra: dict[str, Any] | None = None) -> Path:
    """``folder/manifest.json``: this package's manifest (sha256 and size of every file) plus the graph format,
    opset, versions and the sha256 of the weights each graph was exported from."""
    from ..support.atomic_files import write_text_atomic
    from ..model_files.manifest import MANIFEST_FILE, build_manifest
    from . import installed_engines

    manifest = build_manifest(folder, output)
    versions = {k: v for k, v in installed_engines().items() if v is not None}
    manifest.update({"graph_format": fmt, "opset": OPSET, "versions": versions,
                     "source_weights_sha256": dict(sorted(sources.items())),
                     "graphs": {kind: list(graph_files(kind, fmt)) for kind in sorted(sources)}, **(extra or {})})
    path = Path(folder) / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_graph_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest.json of an exported-graph folder, or :class:`ConfigurationError` naming what is wrong."""
    from ..model_files.manifest import MANIFEST_FILE, MANIFEST_FORMAT

    path = Path(folder) / MANIFEST_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{str(folder)!r} has no {MANIFEST_FILE}: pass a folder written by `facemask "
                                 "export`") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{str(path)!r} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or data.get("graph_format") not in FORMATS \
            or not isinstance(data.get("files"), dict) or not isinstance(data.get("source_weights_sha256"), dict):
        raise ConfigurationError(f"{str(path)!r} is not the manifest of exported graphs (written by `facemask "
                                 "export`)")
    return data


def source_problem(manifest: dict[str, Any], kind: str, sha256: str) -> str | None:
    """None when an exported-graph manifest says ``kind``'s graph was exported from the weights with ``sha256``."""
    source = manifest["source_weights_sha256"].get(kind)
    if source == sha256:
        return None
    return (f"its {kind} graph was exported from other weights (sha256 {str(source)[:12]}..., these are "
            f"{sha256[:12]}...)")


def graph_folder_problem(folder: Path, kind: str, fmt: str, sha256: str | None = None) -> str | None:
    """None when ``folder`` holds ``kind``'s graph in ``fmt`` exactly as its manifest lists it (and, with ``sha256``,
    exported from the weights with that sha256), else why not."""
    from ..model_files.manifest import file_sha256

    try:
        manifest = read_graph_manifest(folder)
    except ConfigurationError as exc:
        return str(exc)
    if manifest["graph_format"] != fmt:
        return f"its manifest describes {manifest['graph_format']} graphs, not {fmt}"
    other_weights = None if sha256 is None else source_problem(manifest, kind, sha256)
    if other_weights is not None:
        return other_weights
    files = manifest["files"]
    for name in graph_files(kind, fmt):
        entry, path = files.get(name), folder / name
        if not isinstance(entry, dict):
            return f"its manifest does not list {name!r}"
        if not path.is_file():
            return f"{name!r} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{name!r} is {path.stat().st_size} bytes, its manifest says {entry.get('size')}"
        if file_sha256(path) != entry.get("sha256"):
            return f"{name!r} does not match the sha256 in its manifest"
    return None
