"""The ``torch`` engine: the PyTorch module itself (any device, any precision); the parity reference."""
from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np
import torch

from .precision import DEFAULT_PRECISION, net_input


class TorchEngine:
    """Runs an already prepared module (:func:`~modelscope_facemask.engines.precision.prepare_net`). The batch goes
    to the device of the module's weights (so moving the module moves the engine), cast to ``precision``; the outputs come
    back as float32 tensors on that device (unchanged in fp32, so results stay bit-identical).

    ``net`` may also be a function returning the module, read at every call (an owner whose ``net`` attribute is
    replaced, e.g. ``FaceDetector``, keeps running its current module).
    """

    name = "torch"

    def __init__(self, net: Union[torch.nn.Module, Callable[[], torch.nn.Module]],
                 precision: str = DEFAULT_PRECISION) -> None:
        self._net = net
        self.precision = precision
        self.source = "torch module"

    @property
    def net(self) -> torch.nn.Module:
        return self._net if isinstance(self._net, torch.nn.Module) else self._net()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.inference_mode()
    def __call__(self, batch: Any) -> tuple[torch.Tensor, ...]:
        net = self.net
        device = next(net.parameters()).device
        if isinstance(batch, np.ndarray):
            tensor = torch.from_numpy(batch)
        else:
            tensor = batch
            if device.type == "cuda" and tensor.device.type == "cpu" and tensor.is_pinned():
                # a tensor allocated pinned by torch (the caching host allocator keeps it until the copy is done):
                # the copy overlaps with host work; the network runs after it on the same stream
                tensor = tensor.to(device, non_blocking=True)
        outputs = net(net_input(tensor, device, self.precision))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        if self.precision == DEFAULT_PRECISION:
            return outputs
        return tuple(o.float() for o in outputs)
