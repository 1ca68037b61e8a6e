"""Reading and strictly loading weights files in the official layouts.

Accepted: a plain state dict, keys prefixed ``module.`` (DataParallel), a ``{"state_dict": ...}`` wrapper, as
``pytorch_model.pt`` (always read with ``weights_only=True``) or ``model.safetensors``. Loading is strict: an error
lists missing and unexpected keys and shape mismatches (the reference detector loads with ``strict=False`` and
silently accepts a wrong file; we never do). Weights holding NaN or Inf are refused, naming the tensors: such a
network returns NaN embeddings for every face.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .errors import CheckpointError

TORCH_WEIGHTS = "pytorch_model.pt"
SAFETENSORS_WEIGHTS = "model.safetensors"
_MAX_LISTED = 8


def find_weights_file(model_dir: str | os.PathLike) -> Path:
    """The weights file of a model folder: ``model.safetensors`` when present, else ``pytorch_model.pt``."""
    folder = Path(model_dir)
    for name in (SAFETENSORS_WEIGHTS, TORCH_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"no weights in {str(folder)!r}: expected {SAFETENSORS_WEIGHTS!r} or {TORCH_WEIGHTS!r}; "
        "download the full model repository or pass the folder that holds the weights"
    )


def normalise_state_dict(state: Mapping[str, object], *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` and strip a ``module.`` prefix; every value must be a tensor."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; is this a weights file?")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch weights file (``weights_only=True``) into a normalised CPU state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, truncated files, foreign formats
        raise CheckpointError(
            f"cannot read weights file {str(path)!r} ({type(exc).__name__}: {str(exc)[:300]}); "
            "it must be a torch state dict saved with torch.save or a safetensors file"
        ) from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return normalise_state_dict(state, source=str(path))


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def non_finite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` holding NaN or Inf, each with its count of such values."""
    found = []
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            if bool(torch.isfinite(value.sum())):  # fast path: a finite sum means every value is finite
                continue
            bad = int((~torch.isfinite(value)).sum())  # (a sum can also overflow: count exactly)
            if bad:
                found.append(f"{key} ({bad} of {value.numel()} values)")
    return found


def check_finite(state: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every tensor of ``state`` that holds NaN or Inf."""
    bad = non_finite_tensors(state)
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or Inf) in {len(bad)} tensor(s): {_listed(bad)}; "
            "the file is corrupt or was saved from a diverged training run: use the original weights file"
        )


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> nn.Module:
    """Load ``state`` into ``module`` strictly; raise :class:`CheckpointError` describing every mismatch, or naming
    the tensors that hold NaN or Inf.

    The one exception: BatchNorm ``num_batches_tracked`` counters may be absent (old checkpoints; unused here).
    """
    state = normalise_state_dict(state, source=source)
    expected = module.state_dict()
    # BatchNorm's step counter is unused at inference and absent from checkpoints saved before PyTorch 0.4.1:
    # the only key allowed to be missing (it keeps the network's own value, 0)
    state.update({k: v for k, v in expected.items() if k.endswith(".num_batches_tracked") and k not in state})
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {_listed(mismatched)}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__} ({'; '.join(parts)}); "
            "check that the file belongs to this model and configuration"
        )
    check_finite(state, source=source)
    module.load_state_dict(state, strict=True)
    return module


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict as ``.safetensors`` or a torch file (by suffix), contiguous CPU tensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # safetensors creates the file 0600 whatever the umask
    else:
        torch.save(tensors, str(path))
    return path
