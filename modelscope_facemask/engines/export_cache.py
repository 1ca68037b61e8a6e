"""Exported graphs for the ``onnxruntime``/``openvino`` engines: from a folder written by ``facemask export``, or
exported on first use into a cache.

Cache: ``$FACEMASK_ENGINE_CACHE``, default ``$FACEMASK_CACHE/engines`` (``~/.cache/modelscope-facemask/engines``).
One folder per network, named by the network kind, the sha256 of its weights (the weights file's bytes; the state
dict's tensors when the network did not come from a file), the graph format, the precision, and the versions of
this package, torch and the opset, so a new version or other weights never reuse a stale graph. A folder is
assembled in a temporary sibling and renamed into place, so concurrent first uses are safe: the second process
finds the first one's folder (or its own rename fails and it takes the one that won). Each folder holds a
``manifest.json`` with the sha256 and size of its files and the sha256 of the weights each graph was exported from;
a cached graph that no longer matches it (truncated, edited), or whose manifest names other weights (another
network's entry copied in), is logged at WARNING and exported again. A cache folder that is not an entry this
package wrote (no manifest of ours, files it does not list) is never deleted: it is a
:class:`~modelscope_facemask.errors.ConfigurationError` naming it. A folder given by the user (``engine_dir``) is
never changed: a mismatch there is a :class:`~modelscope_facemask.errors.CheckpointError`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigurationError
from ..support.log import logger
from .export import OPSET, export_network, graph_files
from .int8_graphs import refuse_int8_folder
from .graph_manifest import graph_folder_problem, read_graph_manifest, source_problem, write_graph_manifest  # noqa: F401

ENGINE_CACHE_ENV = "FACEMASK_ENGINE_CACHE"
ENGINE_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino"}
CACHE_OUTPUT, EXPORT_OUTPUT = "engine-cache", "export"
HIT, FRESH, GIVEN = "cache hit", "fresh export", "exported folder"


def engine_cache_dir() -> Path:
    """``$FACEMASK_ENGINE_CACHE``, else ``engines/`` in the package cache (``$FACEMASK_CACHE``)."""
    given = os.environ.get(ENGINE_CACHE_ENV)
    if given:
        return Path(given).expanduser()
    from ..model_files.registry_files import cache_dir

    return cache_dir() / "engines"


def weights_sha256(net: torch.nn.Module, weights_file: str | os.PathLike | None = None) -> str:
    """The sha256 of the weights file the network was loaded from, or, without one, of its state dict (names,
    dtypes, shapes and bytes, in order)."""
    if weights_file is not None:
        from ..model_files.manifest import file_sha256

        return file_sha256(weights_file)
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def cache_key(kind: str, sha256: str, fmt: str) -> str:
    """The cache folder name of one exported network (graphs are always exported in fp32, hence the fixed 'fp32';
    OpenVINO may still run one in bf16)."""
    from ..version import __version__

    return f"{kind}-{sha256[:24]}-{fmt}-fp32-facemask{__version__}-torch{torch.__version__}-opset{OPSET}"


def cached_graph(net: torch.nn.Module, kind: str, engine: str, sha256: str) -> tuple[Path, str]:
    """The graph file ``engine`` loads for ``net`` (exported into the cache when missing, corrupt or exported from
    other weights than ``sha256``), and :data:`HIT` or :data:`FRESH`."""
    from ..support.atomic_files import writing_folder
    from ..model_files.manifest import replacement_problem

    fmt = ENGINE_FORMATS[engine]
    folder = engine_cache_dir() / cache_key(kind, sha256, fmt)
    problem = graph_folder_problem(folder, kind, fmt, sha256) if folder.exists() else "missing"
    if problem is None:
        return folder / graph_files(kind, fmt)[0], HIT
    if problem != "missing":
        foreign = replacement_problem(folder, CACHE_OUTPUT, contents=False)
        if foreign is not None:  # never delete what this package did not write
            raise ConfigurationError(
                f"engine cache entry {str(folder)!r} is unusable ({problem}) and is not a cache entry written by "
                f"this package ({foreign}), so it is left as it is: move it out of the cache, or set "
                f"{ENGINE_CACHE_ENV} to another folder")
        logger.warning("cached %s graph %s is unusable (%s); exporting it again", kind, folder, problem)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with writing_folder(folder, replace=problem != "missing") as staging:
            export_network(net, kind, fmt, staging)
            write_graph_manifest(staging, CACHE_OUTPUT, fmt, {kind: sha256})
    except OSError as exc:  # another process renamed its export in first, or the cache is not writable
        if folder.exists() and graph_folder_problem(folder, kind, fmt, sha256) is None:
            return folder / graph_files(kind, fmt)[0], HIT
        raise ConfigurationError(f"cannot write the {engine} graph cache {str(folder)!r} ({type(exc).__name__}: "
                                 f"{exc}); set {ENGINE_CACHE_ENV} to a writable folder, or export once with "
                                 "`facemask export` and pass engine_dir") from exc
    return folder / graph_files(kind, fmt)[0], FRESH


def exported_graph(folder: str | os.PathLike, kind: str, engine: str, sha256: str, precision: str = "fp32") -> Path:
    """The graph of ``kind`` in a ``facemask export`` folder, checked: the format suits ``engine`` (onnxruntime
    runs ONNX; openvino runs IR or ONNX), it was exported from these weights, and its files match the manifest."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    if not folder.is_dir():
        raise ConfigurationError(f"engine_dir {str(folder)!r} is not a folder: pass a folder written by "
                                 "`facemask export`")
    manifest = read_graph_manifest(folder)
    refuse_int8_folder(folder, manifest, precision)
    fmt = manifest["graph_format"]
    if engine == "onnxruntime" and fmt != "onnx":
        raise ConfigurationError(f"engine_dir {str(folder)!r} holds {fmt} graphs, which onnxruntime cannot run: "
                                 "export with --format onnx, or use engine='openvino'")
    other_weights = source_problem(manifest, kind, sha256)
    if other_weights is not None:
        raise ConfigurationError(f"engine_dir {str(folder)!r}: {other_weights}; export again with `facemask export` "
                                 "for this model")
    problem = graph_folder_problem(folder, kind, fmt)
    if problem is not None:
        raise CheckpointError(f"engine_dir {str(folder)!r}: {problem}; export again with `facemask export`")
    return folder / graph_files(kind, fmt)[0]


def network_engine(net: torch.nn.Module, kind: str, engine: str, *, precision: str = "fp32",
                   weights_file: str | os.PathLike | None = None, engine_dir: str | os.PathLike | None = None) -> Any:
    """An engine running ``net``: the torch module itself (already prepared in ``precision``), or the exported graph
    from ``engine_dir`` or the cache (``net`` in fp32: graphs are always exported in fp32, and openvino runs one in
    bf16 when ``precision`` says so). Logs at INFO which engine runs and from which file."""
    from . import DEFAULT_ENGINE

    if engine == DEFAULT_ENGINE:
        from .torch_engine import TorchEngine

        return TorchEngine(net, precision)
    sha256 = weights_sha256(net, weights_file)
    if precision == "int8":
        return _int8_engine(kind, engine, sha256, engine_dir)
    if engine_dir is not None:
        graph, how = exported_graph(engine_dir, kind, engine, sha256, precision), GIVEN
    else:
        graph, how = cached_graph(net, kind, engine, sha256)
    if engine == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        runner: Any = OnnxRuntimeEngine(graph, source=how)
    else:
        from .openvino_engine import OpenVinoEngine

        runner = OpenVinoEngine(graph, source=how, precision=precision)
    logger.info("FaceMask %s runs on %s (CPU, %s, %d threads) from %s", kind, engine, precision, runner.threads,
                runner.source)
    return runner


def _int8_engine(kind: str, engine: str, sha256: str, engine_dir: str | os.PathLike | None) -> Any:
    """The openvino engine on ``kind``'s graph of a ``facemask quantize`` folder (int8, or fp32 where that folder
    kept the network in fp32); ``runner.int8`` says which, and the INFO line too."""
    from . import check_int8_request
    from .int8_graphs import int8_graph
    from .openvino_engine import OpenVinoEngine

    check_int8_request(engine, "int8", engine_dir)
    graph, int8 = int8_graph(engine_dir, kind, sha256)  # type: ignore[arg-type]
    runner = OpenVinoEngine(graph, source="quantized folder" if int8 else "quantized folder, kept in fp32",
                            precision="int8")
    runner.int8 = int8
    logger.info("FaceMask %s runs on openvino (CPU, %s, %d threads) from %s", kind, "int8" if int8 else
                "fp32 (kept in fp32 by facemask quantize)", runner.threads, runner.source)
    return runner


def check_replaceable_output(out: Path, output: str, *, force: bool) -> bool:
    """Whether ``out`` exists, after refusing it unless it is new, an empty folder or (with ``force``) an unchanged
    earlier ``facemask OUTPUT`` folder (its generated manifest lists exactly its files):
    :class:`~modelscope_facemask.errors.OutputFolderError` otherwise, the folder left untouched."""
    from ..errors import OutputFolderError
    from ..model_files.manifest import replacement_problem

    exists = out.exists() or out.is_symlink()
    empty = exists and out.is_dir() and not out.is_symlink() and not any(out.iterdir())
    if exists and not empty:
        problem = replacement_problem(out, output)
        if problem is None and not force:
            raise OutputFolderError(f"{str(out)!r} exists (an earlier `facemask {output}` output); choose a new "
                                    "folder, or pass --force to replace it")
        if problem is not None:
            raise OutputFolderError(
                f"refusing to {'replace' if force else 'write into'} {str(out)!r}: {problem}, so it is not provably "
                f"an unchanged `facemask {output}` output and may hold your data; choose a new --out folder, or move "
                "or delete it yourself")
    return exists


def export_folder(out: str | os.PathLike, fmt: str, networks: dict[str, tuple[torch.nn.Module, str]], *,
                  force: bool = False) -> dict[str, int]:
    """Write ``networks`` (kind -> (fp32 module, sha256 of its weights)) as ``fmt`` graphs plus ``manifest.json``
    into ``out``, atomically; the files written (name -> bytes).

    ``out`` may be new or an empty folder; with ``force`` also an unchanged earlier ``facemask export`` output (its
    generated manifest lists exactly its files). Anything else is refused with
    :class:`~modelscope_facemask.errors.OutputFolderError` and left untouched.
    """
    from ..support.atomic_files import writing_folder

    out = Path(out)
    exists = check_replaceable_output(out, EXPORT_OUTPUT, force=force)
    with writing_folder(out, replace=exists) as staging:
        for kind, (net, _) in networks.items():
            export_network(net, kind, fmt, staging)
        write_graph_manifest(staging, EXPORT_OUTPUT, fmt, {kind: sha for kind, (_, sha) in networks.items()})
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
