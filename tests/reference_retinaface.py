"""ModelScope's own RetinaFace, assembled from ModelScope's parts, as the independent reference for parity tests.

'Resnet50' is ModelScope's ``RetinaFace`` class as is (``pretrain`` forced off). 'mobilenet0.25' -- which ModelScope's
constructor rejects ("Invalid name") although its ``net.py`` ships ``MobileNetV1`` -- is the same class with the
attributes its ``__init__`` would set, in the same order, but with ``IntermediateLayerGetter(MobileNetV1(), ...)``
as body; ``forward`` is ModelScope's, unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch
import torchvision.models._utils as tv_utils
from modelscope.models.cv.face_detection.retinaface.detection import RetinaFaceDetection
from modelscope.models.cv.face_detection.retinaface.models.net import FPN, SSH, MobileNetV1
from modelscope.models.cv.face_detection.retinaface.models.retinaface import RetinaFace
from modelscope.pipelines.cv.retina_face_detection_pipeline import RetinaFaceDetectionPipeline
from modelscope.utils.config import Config
from modelscope.utils.constant import ModelFile
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


def reference_detection_model(folder: str | os.PathLike) -> RetinaFaceDetection:
    """ModelScope's ``RetinaFaceDetection`` on a detector folder's ``pytorch_model.pt`` + ``configuration.json``.

    'Resnet50': ModelScope's constructor as is. 'mobilenet0.25': the attributes its ``__init__`` sets, with the net
    from :func:`build_reference_retinaface`; weights read by ModelScope's own ``load_model``. Because ``load_model``
    loads with ``strict=False``, every tensor of the file is checked to have arrived in the net.
    """
    model_path = os.path.join(os.fspath(folder), ModelFile.TORCH_MODEL_FILE)
    cfg = Config.from_file(os.path.join(os.fspath(folder), ModelFile.CONFIGURATION))["models"]
    if cfg["name"] == "Resnet50":
        detection = RetinaFaceDetection(model_path, device="cpu")
    else:
        detection = RetinaFaceDetection.__new__(RetinaFaceDetection)
        nn.Module.__init__(detection)
        detection.model_path = model_path
        detection.cfg = cfg
        detection.net = build_reference_retinaface(cfg)
        detection.load_model()
        detection.device = "cpu"
        detection.mean = torch.tensor([[[[104]], [[117]], [[123]]]])
    loaded = detection.net.state_dict()
    for key, value in torch.load(model_path, map_location="cpu", weights_only=True).items():
        assert key in loaded and torch.equal(loaded[key], value), f"{key} did not load into the reference net"
    return detection


class ReferenceFaceDetection:
    """The ``face_detection`` step of ModelScope's face pipelines, run by ``RetinaFaceDetectionPipeline``'s own
    ``preprocess`` and ``forward`` on a :class:`RetinaFaceDetection`, with the Pipeline's collate (array -> tensor)
    and ``torch.no_grad`` in between.

    ``preprocess`` turns the BGR array it is given into RGB float32, which is what ModelScope's flow feeds its
    detector; weights trained on BGR (``channel_order: BGR`` in their configuration.json, e.g. biubug6's
    mobilenet0.25) are fed the channels swapped back, as they expect.
    """

    def __init__(self, detector: RetinaFaceDetection, channel_order: str = "RGB") -> None:
        self.detector = detector
        self.channel_order = channel_order

    def __call__(self, image_bgr: np.ndarray) -> dict[str, Any]:
        data = RetinaFaceDetectionPipeline.preprocess(self, image_bgr)
        if self.channel_order == "BGR":
            data["img"] = np.ascontiguousarray(data["img"][:, :, ::-1])
        with torch.no_grad():
            return RetinaFaceDetectionPipeline.forward(self, {"img": torch.from_numpy(np.ascontiguousarray(data["img"]))})
