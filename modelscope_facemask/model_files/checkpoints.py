"""Reading and strictly loading weights files in the official layouts.

Accepted: a plain state dict, keys prefixed ``module.`` (DataParallel), a ``{"state_dict": ...}`` wrapper, as
``pytorch_model.pt`` (always read with ``weights_only=True``) or ``model.safetensors``. Loading is strict: an error
lists missing and unexpected keys and shape mismatches (the reference detector loads with ``strict=False`` and
silently accepts a wrong file; we never do). Weights holding NaN or Inf are refused, naming the tensors: such a
network returns NaN embeddings for every face.

Loading makes no second copy of the weights: zip-format torch files (everything ``torch.save`` writes since
PyTorch 1.6) are memory-mapped (``torch.load(mmap=True)``) and safetensors files are mapped by safetensors itself;
:func:`build_and_load` builds the network on the ``meta`` device (no memory, no random initialisation) and assigns
the file's tensors as its weights (``load_state_dict(assign=True)``). The mapping is private (``MAP_PRIVATE``): a
write into a loaded tensor copies that page and never reaches the file. Legacy (pre-1.6, non-zip) torch files
cannot be mapped and are read into memory as before. A mapped file must be replaced (write a new file, rename it into
place: :func:`save_state_dict`, ``facemask pack`` and hub downloads do), never rewritten in place while a process
uses it (that process would see the new bytes, or crash on a shortened file).
"""
from __future__ import annotations

import itertools
import mmap
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import torch
from torch import nn

from ..support.atomic_files import writing_file
from ..errors import CheckpointError, ConfigurationError

TORCH_WEIGHTS = "pytorch_model.pt"
SAFETENSORS_WEIGHTS = "model.safetensors"
_MAX_LISTED = 8
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def find_weights_file(model_dir: str | os.PathLike) -> Path:
    """The weights file of a model folder: ``model.safetensors`` when present, else ``pytorch_model.pt``. (The
    loaders then require it to be listed in the folder's manifest.json, where there is one: a safetensors file added
    beside a packed ``pytorch_model.pt`` is refused, not preferred.)"""
    folder = Path(model_dir)
    for name in (SAFETENSORS_WEIGHTS, TORCH_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"no weights in {str(folder)!r}: expected {SAFETENSORS_WEIGHTS!r} or {TORCH_WEIGHTS!r}; "
        "download the full model repository or pass the folder that holds the weights"
    )


def check_fits_file(elements: int, weights: str | os.PathLike, *, described_by: str) -> None:
    """Raise :class:`ConfigurationError` when a network whose state dict holds ``elements`` values cannot be stored in
    the file ``weights`` (every value takes at least one byte, whatever its dtype). ``described_by`` names the
    configuration file, key and value that describe the network. Called before the network is built, so that an
    architecture value no checkpoint of this size could hold fails at once instead of allocating for minutes."""
    size = Path(weights).stat().st_size
    if elements > size:
        raise ConfigurationError(
            f"{described_by} describes a network of {elements:,} weight values, but its weights file "
            f"{str(weights)!r} has only {size:,} bytes (at least one byte per value): the configuration does not "
            "belong to these weights; set the values the weights were trained with (or re-download the repository)")


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


def read_state_dict(path: str | os.PathLike, *, mmap_file: bool = True) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch weights file (``weights_only=True``) into a normalised CPU state dict.

    With ``mmap_file`` (default) a zip-format torch file is memory-mapped privately instead of read: its tensors
    share the pages of the file (no copy; writes into them stay in this process). Legacy torch files are read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")  # memory-mapped by safetensors
        elif mmap_file and zipfile.is_zipfile(path):
            with torch.serialization.set_default_mmap_options(mmap.MAP_PRIVATE):  # never write back to the file
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
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


def build_and_load(build: Callable[[], ModuleT], state: Mapping[str, torch.Tensor], *,
                   source: str = "checkpoint") -> ModuleT:
    """``build()`` run on the ``meta`` device (no memory, no random initialisation), then ``state`` loaded into it
    strictly by :func:`load_weights`, its tensors becoming the module's weights: no second copy of the weights
    exists (with :func:`read_state_dict`'s mapped files, not even a first one in anonymous memory)."""
    with torch.device("meta"):
        module = build()
    return load_weights(module, state, source=source)


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> nn.Module:
    """Load ``state`` into ``module`` strictly; raise :class:`CheckpointError` describing every mismatch, or naming
    the tensors that hold NaN or Inf.

    A module built on the ``meta`` device (:func:`build_and_load`) takes ``state``'s tensors themselves
    (``load_state_dict(assign=True)``; a tensor of another dtype than the network's is converted); any other module
    gets a copy of them. The one exception to strictness: BatchNorm ``num_batches_tracked`` counters may be absent
    (old checkpoints; unused here).
    """
    state = normalise_state_dict(state, source=source)
    expected = module.state_dict()
    assign = any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers()))
    # BatchNorm's step counter is unused at inference and absent from checkpoints saved before PyTorch 0.4.1:
    # the only key allowed to be missing (it keeps the network's own value, 0)
    state.update({k: torch.zeros_like(v, device="cpu") if v.is_meta else v for k, v in expected.items()
                  if k.endswith(".num_batches_tracked") and k not in state})
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
    if not assign:
        module.load_state_dict(state, strict=True)
        return module
    # assigned tensors keep their own dtype: give them the network's (a file saved in fp16, say, becomes fp32)
    state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in itertools.chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if left:  # a tensor the state dict does not hold (a non-persistent buffer): the network cannot run
        raise CheckpointError(f"{source}: {type(module).__name__} built on the meta device still has no values for "
                              f"{_listed(left)}; build it on the CPU and load_weights into it instead")
    return module


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict as ``.safetensors`` or a torch file (by suffix), contiguous CPU tensors.

    The file is written next to ``path`` and renamed into place, never rewritten in place: a process that has
    ``path`` memory-mapped (every loaded model does) keeps the old file's contents.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with writing_file(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file 0600 whatever the umask
        else:
            # torch names the archive's inner folder after the file's stem: save under the final name in a temporary
            # folder, so the bytes (and sha256) equal those of a direct torch.save(path)
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
                inner = Path(folder) / path.name
                torch.save(tensors, str(inner))
                os.replace(inner, tmp)
    return path
