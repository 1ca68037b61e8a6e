"""ModelScope's own RetinaFace, assembled from ModelScope's parts, as the independent reference for parity tests.

'Resnet50' is ModelScope's ``RetinaFace`` class as is (``pretrain`` forced off). 'mobilenet0.25' -- which ModelScope's
constructor rejects ("Invalid name") although its ``net.py`` ships ``MobileNetV1`` -- is the same class with the
attributes its ``__init__`` would set, in the same order, but with ``IntermediateLayerGetter(MobileNetV1(), ...)``
as body; ``forward`` is ModelScope's, unchanged.
"""
from __future__ import annotations

from typing import Any, Mapping

import torchvision.models._utils as tv_utils
from modelscope.models.cv.face_detection.retinaface.models.net import FPN, SSH, MobileNetV1
from modelscope.models.cv.face_detection.retinaface.models.retinaface import RetinaFace
from torch import nn


def build_reference_retinaface(cfg: Mapping[str, Any]) -> nn.Module:
    """ModelScope's RetinaFace for a configuration.json ``models`` block ('Resnet50' or 'mobilenet0.25')."""
    cfg = {**cfg, "pretrain": False}
    if cfg["name"] == "Resnet50":
        return RetinaFace(cfg)
    if cfg["name"] != "mobilenet0.25":
        raise ValueError(f"no reference RetinaFace for backbone {cfg['name']!r}")
    net = RetinaFace.__new__(RetinaFace)
    nn.Module.__init__(net)
    # RetinaFace.__init__, line for line, with the mobilenet body
    net.body = tv_utils.IntermediateLayerGetter(MobileNetV1(), dict(cfg["return_layers"]))
    in_channels_stage2 = cfg["in_channel"]
    in_channels_list = [in_channels_stage2 * 2, in_channels_stage2 * 4, in_channels_stage2 * 8]
    out_channels = cfg["out_channel"]
    net.fpn = FPN(in_channels_list, out_channels)
    net.ssh1 = SSH(out_channels, out_channels)
    net.ssh2 = SSH(out_channels, out_channels)
    net.ssh3 = SSH(out_channels, out_channels)
    net.ClassHead = net._make_class_head(fpn_num=3, inchannels=cfg["out_channel"])
    net.BboxHead = net._make_bbox_head(fpn_num=3, inchannels=cfg["out_channel"])
    net.LandmarkHead = net._make_landmark_head(fpn_num=3, inchannels=cfg["out_channel"])
    return net
