"""Inference engines: a network as a callable ``(B, 3, H, W) float32 batch -> tuple of float32 torch tensors``.

``torch`` (the default and the parity reference) runs the PyTorch module itself, in any precision and on any device.
``onnxruntime`` and ``openvino`` run graphs exported from the same weights (:mod:`.export`): given in a folder
written by ``facemask export`` (``engine_dir``), or exported on first use into a cache keyed by the weights'
sha256 (:mod:`.export_cache`). They run on the CPU in fp32 (``openvino`` also in bf16 on CPUs with bf16 hardware:
the same fp32 graph, compiled with OpenVINO's bf16 inference precision), with as many threads as
``torch.get_num_threads()`` (which honours ``OMP_NUM_THREADS`` and ``torch.set_num_threads``). A requested engine that is not installed raises
:class:`~modelscope_facemask.errors.MissingExtraError` naming the extra (``[onnx]``, ``[openvino]``).
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable, Protocol

import torch

from ..errors import ConfigurationError

ENGINES = ("torch", "onnxruntime", "openvino")
DEFAULT_ENGINE = "torch"
#: engine -> (module it needs, the pip extra that installs it)
ENGINE_EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
#: network kinds an engine runs, and their graph names
KINDS = ("recognizer", "detector")


class NetworkEngine(Protocol):
    """A network behind one call: ``engine(batch)`` with a float32 NCHW numpy array or tensor returns the network's
    outputs as a tuple of float32 torch tensors (on the CPU for the exported engines)."""

    name: str
    #: what runs, for logs: "torch module", or the graph file and whether it was a cache hit or a fresh export
    source: str

    def __call__(self, batch: Any) -> tuple[torch.Tensor, ...]: ...


def check_engine(value: Any, *, where: str = "engine") -> str | None:
    """``None`` (use the configured engine) or one of :data:`ENGINES` exactly; anything else raises
    :class:`ConfigurationError` naming the allowed values."""
    if value is None or (isinstance(value, str) and value in ENGINES):
        return value
    raise ConfigurationError(f"{where} must be one of {', '.join(repr(e) for e in ENGINES)}, got {value!r}")


#: precisions each exported engine runs (the torch engine runs every precision)
ENGINE_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16", "int8")}
#: how to make the int8 graphs precision='int8' runs (named by every refusal)
QUANTIZE_HINT = ("`facemask quantize --model M --calibration IMAGES_OR_DIR --out DIR`, then engine='openvino', "
                 "engine_dir=DIR (--engine openvino --engine-dir DIR)")


def check_engine_setup(engine: str, device: torch.device | str, precision: str) -> None:
    """Refuse what an exported engine cannot run: a non-CPU device, a precision it does not offer, or bf16 on a CPU
    without bf16 hardware (:class:`ConfigurationError`); and refuse an engine that is not installed
    (``MissingExtraError``)."""
    if engine == DEFAULT_ENGINE:
        return
    if torch.device(device).type != "cpu":
        raise ConfigurationError(f"engine {engine!r} runs on the CPU only, but the device is {str(device)!r}: pass "
                                 f"device='cpu' (--device cpu), or use engine='torch' on CUDA")
    offered = ENGINE_PRECISIONS[engine]
    if precision not in offered:
        only = " or ".join(p for p in offered if p != "int8")
        also = " (or int8, from a `facemask quantize` folder)" if "int8" in offered else ""
        raise ConfigurationError(f"engine {engine!r} runs in {only} only{also}, but precision {precision!r} was asked "
                                 f"for: use precision='fp32' with {engine!r}, or engine='torch' for fp16/bf16")
    if precision == "bf16":
        from .precision import cpu_has_bf16

        if not cpu_has_bf16():
            raise ConfigurationError(f"engine {engine!r} runs bf16 only on CPUs with bf16 hardware (avx512_bf16 or "
                                     "amx_bf16), and this CPU has none: use precision='fp32' (the default)")
    require_engine(engine)


def check_int8_request(engine: str, precision: str, engine_dir: Any) -> None:
    """Refuse precision 'int8' without the folder ``facemask quantize`` wrote (``engine_dir``): int8 graphs are
    never made silently on first use (their calibration images decide their accuracy)."""
    if precision != "int8":
        return
    _check_int8_engine(engine)
    if engine_dir is None:
        raise ConfigurationError(f"precision 'int8' needs the int8 graphs of a `facemask quantize` folder: run "
                                 f"{QUANTIZE_HINT}; int8 is never quantized silently on first use")


def _check_int8_engine(engine: str) -> None:
    if engine != "openvino":
        raise ConfigurationError(f"precision 'int8' runs on engine='openvino' only (CPU), not {engine!r}: quantize "
                                 f"the model once with {QUANTIZE_HINT}")


def require_engine(engine: str) -> Any:
    """Import and return the engine's module, or raise ``MissingExtraError`` naming its extra."""
    from ..support.extras import require

    module, extra = ENGINE_EXTRAS[engine]
    return require(module, extra, f"engine={engine!r}")


def installed_engines() -> dict[str, str | None]:
    """Every engine with its installed version, or ``None`` when it is not installed."""
    versions: dict[str, str | None] = {"torch": torch.__version__}
    for engine, (module, _) in ENGINE_EXTRAS.items():
        versions[engine] = _module_version(module) if importlib.util.find_spec(module) is not None else None
    return versions


def _module_version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


Runner = Callable[[Any], "tuple[torch.Tensor, ...]"]
