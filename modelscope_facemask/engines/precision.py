"""Numeric precision of the networks: ``fp32`` (default, the parity reference), ``fp16``, ``bf16`` or ``int8``.

``int8`` is not a torch precision: it runs graphs quantized by ``facemask quantize`` on the ``openvino`` engine,
from the folder that command wrote (:mod:`modelscope_facemask.engines.int8_graphs`).

The weights are cast once when a network is set up (no per-call autocast); in fp16/bf16 the network is also put in
channels_last memory format, and its inputs are cast to the same dtype and layout. fp32 changes nothing (same dtype,
same contiguous layout as before, so results stay bit-identical). Outputs are always brought back to float32.

fp16 is for CUDA: on the CPU it is refused (PyTorch's CPU fp16 convolutions are unoptimised; measured on this
project's 2-core AVX2 CPU, the small recognizer at batch 8 took 7x as long as in fp32). bf16 on a CPU without bf16
hardware (``avx512_bf16`` or ``amx_bf16``) runs, but is logged at WARNING because it is several times slower than fp32.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from ..errors import ConfigurationError
from ..support.log import logger

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: the precisions the torch module itself runs in (int8 runs only as a quantized OpenVINO graph)
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION = "fp32"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(value: Any, *, where: str = "precision") -> str | None:
    """``None`` (use the configured precision) or one of :data:`PRECISIONS` exactly; anything else (``'fp64'``,
    ``16``, ``'FP16 '``, ``torch.float16``) raises :class:`ConfigurationError`."""
    if value is None or (isinstance(value, str) and value in PRECISIONS):
        return value
    raise ConfigurationError(f"{where} must be one of {', '.join(repr(p) for p in PRECISIONS)} (lower case), "
                             f"got {value!r} ({type(value).__name__})")


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a checked precision name (``int8`` has none: :class:`ConfigurationError`)."""
    precision = check_precision(precision) or DEFAULT_PRECISION
    if precision not in DTYPES:
        raise ConfigurationError(f"precision {precision!r} is not a torch dtype: it runs only as a graph quantized by "
                                 "`facemask quantize`, with engine='openvino' and engine_dir=DIR")
    return DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'fp16' or 'bf16' for a floating dtype (else its torch name)."""
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            flags = set(file.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def check_precision_on_device(precision: str, device: torch.device | str) -> None:
    """Refuse fp16 on the CPU (:class:`ConfigurationError`); warn that bf16 will be slow on a CPU without bf16
    hardware."""
    if torch.device(device).type != "cpu":
        return
    if precision == "fp16":
        raise ConfigurationError("precision 'fp16' is for CUDA devices: PyTorch's CPU fp16 convolutions are slow "
                                 "(about 7x fp32 here); on the CPU use precision='fp32' (the default), or 'bf16' on "
                                 "a CPU with bf16 hardware (avx512_bf16 / amx_bf16)")
    if precision == "bf16" and not cpu_has_bf16():
        _warn_slow_bf16()


@functools.lru_cache(maxsize=1)
def _warn_slow_bf16() -> None:
    """The slow-bf16 WARNING, once per process (the recognizer and the detector would each say it)."""
    logger.warning("precision 'bf16' on a CPU without bf16 hardware (no avx512_bf16/amx_bf16 flag): it runs, "
                   "but several times slower than fp32 (5-9x measured on a 2-core AVX2 CPU); use precision='fp32'")


def prepare_net(net: torch.nn.Module, device: torch.device | str, precision: str) -> torch.nn.Module:
    """``net`` on ``device`` in eval mode, its weights cast once to ``precision`` (channels_last unless fp32)."""
    check_precision_on_device(precision, device)
    net = net.to(torch.device(device)).eval()
    if precision != DEFAULT_PRECISION:
        net = net.to(dtype=precision_dtype(precision), memory_format=torch.channels_last)
    return net


def net_input(tensor: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """A float32 NCHW batch as the network of that precision takes it (fp32: only moved to ``device``)."""
    tensor = tensor.to(device)
    if precision == DEFAULT_PRECISION:
        return tensor
    return tensor.to(dtype=precision_dtype(precision)).contiguous(memory_format=torch.channels_last)
