"""Device selection with ModelScope's conventions and no silent fallbacks."""
from __future__ import annotations

import torch

from ..errors import ConfigurationError, DeviceError
from ..support.log import logger


def check_device_type(requested: object) -> None:
    """Raise :class:`ConfigurationError` unless ``requested`` is ``None``, a string or a ``torch.device``."""
    if requested is not None and not isinstance(requested, (str, torch.device)):
        raise ConfigurationError(f"device must be a string such as 'cpu', 'gpu', 'cuda' or 'cuda:N' (or a "
                                 f"torch.device), got {requested!r} ({type(requested).__name__})")


def resolve_device(requested: str | torch.device | None = "gpu") -> torch.device:
    """Map ``'cpu' | 'gpu' | 'cuda' | 'cuda:N' | torch.device | None`` to the device that will run.

    ``'gpu'`` (ModelScope's default for ``pipeline()``) and ``None`` fall back to the CPU when CUDA is absent, logged
    at WARNING. An explicit ``'cuda'``/``'cuda:N'`` that does not exist raises :class:`DeviceError`; a value that is
    not a string or ``torch.device`` (e.g. the integer ``0``) raises :class:`ConfigurationError`.
    """
    check_device_type(requested)
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = (requested or "gpu").strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name in ("gpu", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        logger.warning("device %r requested but CUDA is not available: running on the CPU", requested or "gpu")
        return torch.device("cpu")
    if name.startswith("gpu:"):
        name = "cuda:" + name[4:]
    if name == "cuda" or name.startswith("cuda:"):
        index = 0 if name == "cuda" else name[5:]
        try:
            index = int(index)
        except ValueError:
            raise DeviceError(f"device {requested!r} is not understood; use 'cpu', 'gpu', 'cuda' or 'cuda:N'") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index < 0 or index >= count:
            raise DeviceError(
                f"device {requested!r} does not exist: this machine has {count} CUDA device(s); "
                "use device='cpu' or a valid 'cuda:N'"
            )
        return torch.device("cuda", index)
    raise DeviceError(f"device {requested!r} is not understood; use 'cpu', 'gpu', 'cuda' or 'cuda:N'")
