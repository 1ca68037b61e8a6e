"""IResNet ("IR" units, ArcFace style) in pure PyTorch.

Parameter names equal ModelScope's ``facemask_backbone.IResNet`` so official checkpoints load strictly.
The FaceMask backbone is :func:`iresnet286` (252 layers: 6/21/66/6 units); smaller unit counts of the same
class serve fast tests.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

STAGE_CHANNELS = (64, 128, 256, 512)

#: units per stage of the named depths (ModelScope's ``get_blocks``)
DEPTH_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
    252: (6, 21, 66, 6),
}


def state_dict_elements(units: Sequence[int], num_features: int = 512, input_size: int = 112) -> int:
    """How many values (parameters and buffers) the state dict of ``IResNet(units, ...)`` holds, computed without
    building the network (arithmetic on the unit counts, so any count is instant): a weights file must have at
    least this many bytes."""

    def bn(n: int) -> int:  # weight, bias, running mean and variance, num_batches_tracked
        return 4 * n + 1

    total = 9 * 3 * 64 + bn(64) + 64  # input layer: conv, BN, PReLU
    in_channel = 64
    for depth, count in zip(STAGE_CHANNELS, units):
        shortcut = 0 if in_channel == depth else in_channel * depth + bn(depth)
        first = shortcut + bn(in_channel) + 9 * in_channel * depth + depth + 9 * depth * depth + bn(depth)
        others = bn(depth) + 9 * depth * depth + depth + 9 * depth * depth + bn(depth)
        total += first + (int(count) - 1) * others
        in_channel = depth
    side = input_size // 16
    return total + bn(512) + 512 * side * side * num_features + num_features + bn(num_features)


class BottleneckIR(nn.Module):
    """BN-conv3x3-PReLU-conv3x3(stride)-BN residual unit with a max-pool or conv-BN shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IResNet(nn.Module):
    """IR network for 112x112 faces: input layer, four stages of :class:`BottleneckIR`, BN, FC, BN1d.

    Returns the raw (not normalised) ``num_features``-d embedding, as the reference does.
    """

    def __init__(self, units: Sequence[int] = DEPTH_UNITS[252], num_features: int = 512, input_size: int = 112) -> None:
        super().__init__()
        if len(units) != 4 or any(int(u) < 1 for u in units):
            raise ValueError(f"units must be four positive unit counts per stage, got {tuple(units)!r}")
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.units = tuple(int(u) for u in units)
        self.input_size = input_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        # registered last, as in the reference, so state-dict key order matches official checkpoints
        modules: list[nn.Module] = []
        in_channel = 64
        for depth, count in zip(STAGE_CHANNELS, self.units):
            modules.append(BottleneckIR(in_channel, depth, 2))
            modules.extend(BottleneckIR(depth, depth, 1) for _ in range(count - 1))
            in_channel = depth
        self.body = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        x = self.body(x)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return self.features(x)


def iresnet(num_layers: int = 252, *, num_features: int = 512) -> IResNet:
    """Build an IResNet of a named depth (50, 100, 152 or 252 layers)."""
    if num_layers not in DEPTH_UNITS:
        raise ValueError(f"num_layers must be one of {sorted(DEPTH_UNITS)}, got {num_layers}")
    return IResNet(DEPTH_UNITS[num_layers], num_features=num_features)


def iresnet286(*, num_features: int = 512) -> IResNet:
    """The FaceMask backbone: 252 layers (stages 6/21/66/6), 124.4 M parameters, 1,324 state-dict tensors."""
    return iresnet(252, num_features=num_features)

