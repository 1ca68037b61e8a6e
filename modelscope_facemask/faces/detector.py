"""RetinaFace face detection reproducing ModelScope's ``RetinaFaceDetection.forward`` (plus batching).

Per image: if the longer side exceeds 1500 px, resize (float32, bilinear) by 1000 / longer side; subtract the
mean (104, 117, 123) from the array in the detector's channel order; run the network; decode with cached anchors;
threshold 0.9, top-k 5000, NMS 0.4 (``+1`` area convention), keep 750; coordinates back in original pixels.
Scores stay true scores (the reference divides them by the resize factor too). Images of equal network-input
size run as one batch (no padding, so outputs equal single-image runs up to float rounding).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..checkpoints import find_weights_file, load_weights, read_state_dict
from ..errors import ConfigurationError, ImageLoadError
from ..nets.retinaface import RetinaFace, RetinaFaceConfig
from .anchors import prior_boxes
from .detections import Detections
from .postprocess import postprocess_detections

MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class DetectionSettings:
    """Thresholds and sizes of detection; the defaults are the reference's."""

    confidence_threshold: float = 0.9
    nms_threshold: float = 0.4
    top_k: int = 5000
    keep_top_k: int = 750
    max_side: int = 1500
    resize_side: float = 1000.0


def resize_factor(height: int, width: int, settings: DetectionSettings) -> float:
    """The reference's resize factor ``ss``: 1000 / longer side when that exceeds 1500 px, else 1."""
    longer = max(height, width)
    return settings.resize_side / longer if longer > settings.max_side else 1.0


def check_detectable(image_rgb: np.ndarray, settings: DetectionSettings = DetectionSettings(), label: str = "image") -> None:
    """Raise :class:`ImageLoadError` for an image so thin that the reference's resize would give it a 0-px side."""
    height, width = image_rgb.shape[:2]
    ss = resize_factor(height, width, settings)
    if min(round(height * ss), round(width * ss)) < 1:
        raise ImageLoadError(
            f"{label} is {width}x{height} px: resized to {settings.resize_side:g} px on its longer side for detection "
            "it would have a side of 0 px; crop or pad it to a less extreme aspect ratio"
        )


def network_input(image_rgb: np.ndarray, settings: DetectionSettings, channel_order: str) -> tuple[np.ndarray, float]:
    """The float32 HxWx3 mean-subtracted array the network sees, and the resize factor ``ss``."""
    img = image_rgb.astype(np.float32)
    ss = resize_factor(*img.shape[:2], settings)
    if ss != 1.0:
        img = cv2.resize(img, (0, 0), fx=ss, fy=ss)
    if channel_order == "BGR":
        img = img[:, :, ::-1]
    img = img - np.asarray(MEAN, np.float32)
    return np.ascontiguousarray(img), ss


class FaceDetector:
    """A RetinaFace network plus the reference pre- and post-processing, for batches of RGB uint8 images."""

    def __init__(
        self,
        net: RetinaFace,
        *,
        device: torch.device | str = "cpu",
        settings: DetectionSettings = DetectionSettings(),
        batch_size: int = 8,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.net = net.to(self.device).eval()
        self.config: RetinaFaceConfig = net.config
        self.settings = settings

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, *, device: torch.device | str = "cpu", settings: DetectionSettings = DetectionSettings()
    ) -> "FaceDetector":
        """Load a RetinaFace model folder (``configuration.json`` with a ``models`` block + weights)."""
        model_dir = Path(model_dir)
        config_path = model_dir / "configuration.json"
        try:
            models = json.loads(config_path.read_text(encoding="utf-8"))["models"]
        except FileNotFoundError:
            raise ConfigurationError(f"detector folder {str(model_dir)!r} has no configuration.json") from None
        except (KeyError, json.JSONDecodeError) as exc:
            raise ConfigurationError(
                f"{str(config_path)!r} is not a RetinaFace configuration (needs a 'models' block): {exc}"
            ) from None
        net = RetinaFace(RetinaFaceConfig.from_dict(models))
        weights = find_weights_file(model_dir)
        load_weights(net, read_state_dict(weights), source=str(weights))
        detector = cls(net, device=device, settings=settings)
        detector.weights_file = weights
        return detector

    @torch.inference_mode()
    def raw_outputs(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network outputs for a (B, H, W, 3) float32 mean-subtracted batch."""
        tensor = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).contiguous()
        return self.net(tensor)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in RGB uint8 HxWx3 images (any sizes); one :class:`Detections` per image, in order."""
        prepared = [network_input(img, self.settings, self.config.channel_order) for img in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (arr, _) in enumerate(prepared):
            groups.setdefault(arr.shape[:2], []).append(i)
        results: list[Detections | None] = [None] * len(images)
        for (height, width), group in groups.items():
            priors = prior_boxes(height, width, self.config.min_sizes, self.config.steps, self.config.clip).to(self.device)
            for start in range(0, len(group), self.batch_size):
                members = group[start : start + self.batch_size]
                self._detect_batch(members, prepared, priors, width, height, results)
        return results  # type: ignore[return-value]

    def _detect_batch(self, members, prepared, priors, width, height, results) -> None:
        s = self.settings
        loc, conf, landmarks = self.raw_outputs(np.stack([prepared[i][0] for i in members]))
        for row, i in enumerate(members):
            results[i] = postprocess_detections(
                loc[row], conf[row], landmarks[row], priors,
                variances=self.config.variance, image_width=width, image_height=height, scale=prepared[i][1],
                confidence_threshold=s.confidence_threshold, top_k=s.top_k,
                nms_threshold=s.nms_threshold, keep_top_k=s.keep_top_k,
            )
