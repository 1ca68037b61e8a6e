"""Deterministic, *untrained* weights in the official formats, for tests and the offline demo.

Every value comes from numpy's PCG64 uniform stream (stable across machines and numpy versions), then BatchNorm
running statistics are calibrated by one float64 train-mode pass over deterministic, spatially smooth images (with
default statistics a deep residual net saturates and all embeddings collapse) and rounded to float16 precision
so that last-bit differences between machines do not change the file. Embeddings from these weights are
meaningless as identities; they are valid, distinct and sensitive to their input.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ...faces.recognizer import crops_to_tensor
from ...nets.iresnet import IResNet
from ...nets.retinaface import RetinaFace, RetinaFaceConfig


def _uniform(rng: np.random.Generator, shape: Sequence[int], std: float, mean: float = 0.0) -> torch.Tensor:
    """Uniform values with the given mean and standard deviation (float32)."""
    half_width = std * math.sqrt(3.0)
    values = mean + (rng.random(int(np.prod(shape)), dtype=np.float64) * 2.0 - 1.0) * half_width
    return torch.from_numpy(values.astype(np.float32).reshape(tuple(shape)))


def smooth_images(count: int, height: int, width: int, *, seed: int = 0, cells: int = 6) -> np.ndarray:
    """(count, height, width, 3) uint8 deterministic smooth random images (bilinear upsampling of a coarse grid)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    coarse = rng.random((count, cells + 1, cells + 1, 3))
    ys = np.linspace(0.0, cells, height)
    xs = np.linspace(0.0, cells, width)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[None, :, None, None]
    fx = (xs - x0)[None, None, :, None]
    top = coarse[:, y0][:, :, x0] * (1 - fx) + coarse[:, y0][:, :, x0 + 1] * fx
    bottom = coarse[:, y0 + 1][:, :, x0] * (1 - fx) + coarse[:, y0 + 1][:, :, x0 + 1] * fx
    return np.round((top * (1 - fy) + bottom * fy) * 255.0).astype(np.uint8)


def seeded_init_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter of ``module`` from a PCG64 stream, module by module in definition order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    with torch.no_grad():
        for _, mod in module.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(_uniform(rng, mod.weight.shape, math.sqrt(2.0 / fan_in)))
                if mod.bias is not None:
                    mod.bias.copy_(_uniform(rng, mod.bias.shape, 0.01))
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.weight.copy_(_uniform(rng, mod.weight.shape, 0.1, mean=1.0))
                mod.bias.copy_(_uniform(rng, mod.bias.shape, 0.1))
            elif isinstance(mod, nn.PReLU):
                mod.weight.copy_(_uniform(rng, mod.weight.shape, 0.05, mean=0.25))
    return module


@torch.no_grad()
def calibrate_batchnorm_(module: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``batch`` (one float64 train-mode pass), float16-rounded.

    The pass runs in float64 so that the rounded statistics, and hence the saved files, are bit-identical on every
    CPU (float32 passes differ in the last bits between CPU kinds, which float16 rounding does not always absorb)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    dtype = next(module.parameters()).dtype
    module.double().train()  # float64: machine-dependent summation order stays far below the float16 rounding
    module(batch.double())
    module.eval().to(dtype)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
        m.running_mean.copy_(m.running_mean.half().float())
        m.running_var.copy_(m.running_var.half().float())
        m.num_batches_tracked.zero_()
    return module


def synthetic_recognizer(units: Sequence[int] = (6, 21, 66, 6), *, seed: int = 0, calibration_faces: int = 8) -> IResNet:
    """An IResNet with deterministic untrained weights (default: the full FaceMask configuration)."""
    net = seeded_init_(IResNet(units), seed)
    with torch.no_grad():  # residual branches start small, as in trained IR nets
        for block in net.body:
            block.res_layer[4].weight.mul_(0.2)
    faces = smooth_images(calibration_faces, net.input_size, net.input_size, seed=seed + 1)
    return calibrate_batchnorm_(net, crops_to_tensor(faces))


def synthetic_retinaface(
    config: RetinaFaceConfig, *, seed: int = 0, class_head_std: float = 0.03, calibration_size: int = 320
) -> RetinaFace:
    """A RetinaFace with deterministic untrained weights whose class heads fire on a few percent of anchors.

    Small class-head weights with zero bias give face probabilities spread around 0.5 with a tail above 0.9,
    which exercises decoding, NMS and face choice (the detections themselves are meaningless).
    """
    net = seeded_init_(RetinaFace(config), seed)
    with torch.no_grad():
        for head in net.ClassHead:
            head.conv1x1.weight.copy_(_uniform(np.random.Generator(np.random.PCG64(seed + 7)), head.conv1x1.weight.shape, class_head_std))
            head.conv1x1.bias.zero_()
    images = smooth_images(4, calibration_size, calibration_size, seed=seed + 2).astype(np.float32) - np.array(
        (104.0, 117.0, 123.0), np.float32
    )
    return calibrate_batchnorm_(net, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
