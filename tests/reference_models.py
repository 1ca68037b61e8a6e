"""Independent references built from ModelScope's own modules: the FaceMask backbone (any depth) and its
pre-processing, line for line as ``MaskFaceRecognitionPipeline`` runs them."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from modelscope.models.cv.face_recognition.align_face import align_face
from modelscope.models.cv.face_recognition.torchkit.backbone import facemask_backbone as ref_backbone
from torch import nn


def reference_iresnet(units: Sequence[int], state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """ModelScope's IResNet; for units other than 6/21/66/6 its body is rebuilt from ModelScope's BottleneckIR."""
    net = ref_backbone.iresnet286()
    if tuple(units) != (6, 21, 66, 6):
        blocks = []
        in_channel = 64
        for depth, count in zip((64, 128, 256, 512), units):
            blocks += ref_backbone.get_block(in_channel, depth, count)
            in_channel = depth
        net.body = nn.Sequential(*[ref_backbone.BottleneckIR(b.in_channel, b.depth, b.stride) for b in blocks])
    if state is not None:
        net.load_state_dict(dict(state), strict=True)
    return net.eval()


def reference_embedding(net: nn.Module, crop_bgr: np.ndarray) -> np.ndarray:
    """``MaskFaceRecognitionPipeline.preprocess`` + ``forward`` on one aligned BGR crop -> (1, 512)."""
    face_img = crop_bgr[:, :, ::-1]
    face_img = np.transpose(face_img, axes=(2, 0, 1))
    face_img = ((face_img / 255.0 - 0.5) / 0.5).astype(np.float32)
    with torch.no_grad():
        emb = net(torch.from_numpy(face_img).unsqueeze(0)).detach().cpu().numpy()
    emb /= np.sqrt(np.sum(emb**2, -1, keepdims=True))
    return emb


def reference_face_embeddings(net: nn.Module, image_rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Embeddings the reference computes for faces at ``keypoints`` (N, 10): ModelScope's ``align_face`` on the BGR
    image (as ``FaceProcessingBasePipeline.preprocess`` does), then the reference recognizer."""
    image_bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    # the reference hands align_face float64 landmarks (np.array of the detector's .tolist() output)
    rows = [reference_embedding(net, align_face(image_bgr, (112, 112), k.astype(np.float64).reshape(5, 2))[0]) for k in keypoints]
    return np.concatenate(rows) if rows else np.zeros((0, 512), np.float32)
