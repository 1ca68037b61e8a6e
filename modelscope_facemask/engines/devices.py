"""Device selection with ModelScope's conventions: an automatic choice (CUDA, else the CPU, logged at INFO), and
explicit devices that must exist."""
from __future__ import annotations

import torch

from ..errors import ConfigurationError, DeviceError
from ..support.log import logger


#: the names that choose the device automatically: CUDA when present, else the CPU
AUTOMATIC = ("auto", "gpu")
#: the automatic choices already logged in this process (each is logged once, at INFO)
_announced: set[str] = set()


def check_device_type(requested: object) -> None:
    """Raise :class:`ConfigurationError` unless ``requested`` is ``None``, a string or a ``torch.device``."""
    if requested is not None and not isinstance(requested, (str, torch.device)):
        raise ConfigurationError(f"device must be a string such as 'auto', 'cpu', 'gpu', 'cuda' or 'cuda:N' (or a "
                                 f"torch.device), got {requested!r} ({type(requested).__name__})")


def _announce(requested: str, device: torch.device) -> None:
    """Log an automatic choice once per process, at INFO (a CPU without CUDA is an expected setup, not a fault)."""
    if str(device) in _announced:
        return
    _announced.add(str(device))
    if device.type == "cpu":
        logger.info("device %r: CUDA is not available, running on the CPU", requested)
    else:
        logger.info("device %r: CUDA is available, running on %s", requested, device)


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """Map ``'auto' | 'gpu' | 'cpu' | 'cuda' | 'cuda:N' | torch.device | None`` to the device that will run.

    ``'auto'`` (the default), ``'gpu'`` (ModelScope's default for ``pipeline()``) and ``None`` pick ``cuda:0`` when
    CUDA is available, else the CPU; the choice is logged once per process at INFO. An explicit ``'cuda'``/``'cuda:N'``
    that does not exist raises :class:`DeviceError`; a value that is not a string or ``torch.device`` (e.g. the
    integer ``0``) raises :class:`ConfigurationError`.
    """
    check_device_type(requested)
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = (requested or "auto").strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name in AUTOMATIC:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        _announce(requested or "auto", device)
        return device
    if name.startswith("gpu:"):
        name = "cuda:" + name[4:]
    if name == "cuda" or name.startswith("cuda:"):
        index = 0 if name == "cuda" else name[5:]
        try:
            index = int(index)
        except ValueError:
            raise DeviceError(f"device {requested!r} is not understood; use 'auto', 'cpu', 'gpu', 'cuda' or "
                              "'cuda:N'") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index < 0 or index >= count:
            raise DeviceError(
                f"device {requested!r} does not exist: this machine has {count} CUDA device(s); "
                "use device='auto', device='cpu' or a valid 'cuda:N'"
            )
        return torch.device("cuda", index)
    raise DeviceError(f"device {requested!r} is not understood; use 'auto', 'cpu', 'gpu', 'cuda' or 'cuda:N'")
