"""RetinaFace face detection reproducing ModelScope's ``RetinaFaceDetection.forward`` (plus batching).

Per image: if the longer side exceeds 1500 px, resize (float32, bilinear) by 1000 / longer side (opt-in
``det_max_side`` = N: by N / longer side when that exceeds N px); subtract the
mean (104, 117, 123) from the array in the detector's channel order; run the network; decode with cached anchors;
threshold 0.9, top-k 5000, NMS 0.4 (``+1`` area convention), keep 750; coordinates back in original pixels.
Scores stay true scores (the reference divides them by the resize factor too). Images of equal network-input
size run as one batch (no padding, so outputs equal single-image runs up to float rounding; batches of
:data:`DETECTION_BATCH` on CUDA or with ``pad_batches``, one image on the CPU, where a batch of eight 640x640
images took 0.71 s per image against 0.45 s one at a time with RetinaFace-R50 on 2 cores). In fp16/bf16
(``precision``) the network's weights are cast once and its raw outputs are cast back to float32 before decoding;
a batch that runs out of device memory is halved and retried.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..model_files.checkpoints import build_and_load, check_fits_file, find_weights_file, read_state_dict
from ..engines.torch_engine import TorchEngine
from ..errors import ConfigurationError, ImageLoadError
from ..nets.retinaface import RetinaFace, RetinaFaceConfig, state_dict_elements
from ..engines.precision import DEFAULT_PRECISION, check_precision, prepare_net
from .detections import Detections
from .out_of_memory import run_halving
from .batched_postprocess import PostprocessSettings, device_prior_boxes, postprocess_batch, postprocess_rows, \
    valid_anchor_index
from .padded_batches import bucket_sizes
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
    #: opt-in: detect on a copy whose longer side is at most this many px (replaces the 1500/1000 rule; no upscaling)
    det_max_side: int | None = None
    #: opt-in: batch inputs of different sizes together, zero-padded (= mean grey) into a few shapes
    #: (:mod:`.padded_batches`); off, only inputs of equal size share a batch (outputs equal single-image runs)
    pad_batches: bool = False
    #: post-process each batch on the network's device in torch (:mod:`.batched_postprocess`, equal results) instead
    #: of image by image in numpy; None: on CUDA devices only
    batched_postprocess: bool | None = None


def check_det_max_side(value: object, *, where: str = "det_max_side") -> int | None:
    """``None`` (the reference's 1500/1000 rule) or an integer >= 32 (px); bools, floats and strings are refused."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 32:
        raise ConfigurationError(f"{where} must be an integer >= 32 (the longer side, in px, of the copy detection "
                                 f"runs on; 640 is common) or None (the reference's rule), got {value!r}")
    return int(value)


DETECTION_BATCH = 8


def detection_batch_size(device: torch.device, settings: DetectionSettings) -> int:
    """Images per detector call by default: :data:`DETECTION_BATCH` on CUDA or with ``pad_batches``; 1 on the CPU
    (measured there with RetinaFace-R50 at 640x640 on 2 threads: 0.71 s per image in batches of 8, 0.58 in 4, 0.55 in
    2, 0.45 one at a time; the exported engines were within 4 % of each other at any batch)."""
    return DETECTION_BATCH if device.type != "cpu" or settings.pad_batches else 1


def optional_bool(value: object, *, where: str, expected: str, hint: str = "") -> bool | None:
    """``None`` or a real boolean (numpy's too) as ``bool``; anything else (``'false'``, ``1``) is a
    ConfigurationError "``where`` must be ``expected``, got ...``hint``"."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise ConfigurationError(f"{where} must be {expected}, got {value!r} ({type(value).__name__}){hint}")


def check_pad_batches(value: object, *, where: str = "pad_batches") -> bool | None:
    """``None`` (as configured) or a real boolean; strings such as ``'false'`` and numbers are refused."""
    return optional_bool(value, where=where,
                         expected="True or False (opt-in: batch images of different sizes together, padded)")


def check_batched_postprocess(value: object, *, where: str = "batched_postprocess") -> bool | None:
    """``None`` (auto: batched on CUDA devices only), True or False; anything else is refused."""
    return optional_bool(value, where=where,
                         expected="True (post-process each batch in torch on the device), False (image by image in "
                                  "numpy) or None (auto: on CUDA only)")


def resize_factor(height: int, width: int, settings: DetectionSettings) -> float:
    """The resize factor ``ss``: the reference's 1000 / longer side when that exceeds 1500 px, else 1; with
    ``settings.det_max_side`` = N instead N / longer side when that exceeds N px, else 1."""
    longer = max(height, width)
    if settings.det_max_side is not None:
        return settings.det_max_side / longer if longer > settings.det_max_side else 1.0
    return settings.resize_side / longer if longer > settings.max_side else 1.0


def check_detectable(image_rgb: np.ndarray, settings: DetectionSettings = DetectionSettings(), label: str = "image") -> None:
    """Raise :class:`ImageLoadError` for an image so thin that the reference's resize would give it a 0-px side."""
    height, width = image_rgb.shape[:2]
    ss = resize_factor(height, width, settings)
    if min(round(height * ss), round(width * ss)) < 1:
        raise ImageLoadError(
            f"{label} is {width}x{height} px: resized to {max(height, width) * ss:g} px on its longer side for detection "
            "it would have a side of 0 px; crop or pad it to a less extreme aspect ratio"
        )


def network_input_size(height: int, width: int, settings: DetectionSettings) -> tuple[int, int]:
    """(height, width) of the network input for an image of that size: ``cv2.resize``'s rounding of ``side * ss``."""
    ss = resize_factor(height, width, settings)
    return (height, width) if ss == 1.0 else (round(height * ss), round(width * ss))


def network_planes(
    image_rgb: np.ndarray, settings: DetectionSettings, channel_order: str, out: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """The (3, h, w) float32 mean-subtracted planes the network sees (in its channel order), and the factor ``ss``.

    Bit-identical to the reference (float32 copy of the whole image, ``cv2.resize`` by ``ss``, mean subtracted),
    but converts one channel at a time: at most 4 extra bytes per image pixel instead of 12. OpenCV's 1- and
    3-channel float resizes agree bit for bit except when an output side is 1 px; that case (aspect ratio over
    about 666:1) takes the reference's own call.
    """
    height, width = image_rgb.shape[:2]
    ss = resize_factor(height, width, settings)
    size = network_input_size(height, width, settings)
    planes = np.empty((3, *size), np.float32) if out is None else out
    order = (2, 1, 0) if channel_order == "BGR" else (0, 1, 2)
    mean = np.asarray(MEAN, np.float32)
    if ss != 1.0 and min(size) == 1:
        whole = cv2.resize(image_rgb.astype(np.float32), (0, 0), fx=ss, fy=ss)
        for plane, channel in enumerate(order):
            np.subtract(whole[:, :, channel], mean[plane], out=planes[plane])
        return planes, ss
    for plane, channel in enumerate(order):
        values = image_rgb[:, :, channel].astype(np.float32)
        if ss != 1.0:
            values = cv2.resize(values, (0, 0), fx=ss, fy=ss)
        np.subtract(values, mean[plane], out=planes[plane])
        del values
    return planes, ss


def network_input(image_rgb: np.ndarray, settings: DetectionSettings, channel_order: str) -> tuple[np.ndarray, float]:
    """The float32 HxWx3 mean-subtracted array the network sees, and the resize factor ``ss``."""
    planes, ss = network_planes(image_rgb, settings, channel_order)
    return np.ascontiguousarray(planes.transpose(1, 2, 0)), ss


def read_models_block(config_path: Path) -> dict:
    """The ``models`` object of a RetinaFace configuration.json; :class:`ConfigurationError` naming the file."""
    try:
        models = json.loads(config_path.read_text(encoding="utf-8"))["models"]
    except FileNotFoundError:
        raise ConfigurationError(f"detector folder {str(config_path.parent)!r} has no configuration.json") from None
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: not UTF-8 / not JSON; TypeError: not an object
        raise ConfigurationError(
            f"{str(config_path)!r} is not a RetinaFace configuration (a JSON object with a 'models' block): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(models, dict):
        raise ConfigurationError(f"{str(config_path)!r}: 'models' must be a JSON object, got {type(models).__name__}")
    return models


class FaceDetector:
    """A RetinaFace network plus the reference pre- and post-processing, for batches of RGB uint8 images."""

    def __init__(
        self,
        net: RetinaFace,
        *,
        device: torch.device | str = "cpu",
        settings: DetectionSettings = DetectionSettings(),
        batch_size: int | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        self.device = torch.device(device)
        #: images per network call: ``batch_size``, else :func:`detection_batch_size`
        self.batch_size = detection_batch_size(self.device, settings) if batch_size is None else int(batch_size)
        self.precision = check_precision(precision, where="precision") or DEFAULT_PRECISION
        self.net = prepare_net(net, self.device, self.precision)
        #: what runs the network (the torch module by default; an exported graph with engine='onnxruntime'/'openvino',
        #: see :func:`modelscope_facemask.engines.export_cache.network_engine`); it returns float32 outputs
        self.engine = TorchEngine(lambda: self.net, self.precision)
        self.config: RetinaFaceConfig = net.config
        self.settings = settings

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, *, device: torch.device | str = "cpu", settings: DetectionSettings = DetectionSettings(),
        precision: str = DEFAULT_PRECISION, repository: str | Path | None = None,
    ) -> "FaceDetector":
        """Load a RetinaFace model folder (``configuration.json`` with a ``models`` block + weights).

        The files read are checked first against the ``manifest.json`` of the folder and of ``repository`` (the
        packed model repository the folder may lie in), where there is one: each must be listed there and match
        (:func:`~modelscope_facemask.model_files.manifest.verify_manifest`). Every ``models`` value is checked, and the
        network it describes must fit in the weights file, before anything is built.
        """
        from ..model_files.manifest import verify_manifest

        model_dir = Path(model_dir)
        config_path = model_dir / "configuration.json"
        if not config_path.is_file():
            raise ConfigurationError(f"detector folder {str(model_dir)!r} has no configuration.json")
        weights = find_weights_file(model_dir)
        roots = {os.path.abspath(r): Path(r) for r in (repository, model_dir) if r is not None}  # (once if equal)
        for root in roots.values():
            verify_manifest(root, [config_path, model_dir, weights])
        models = read_models_block(config_path)
        try:
            config = RetinaFaceConfig.from_dict(models)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{str(config_path)!r}: {exc}; fix the file or re-download the detector "
                                     "repository") from None
        check_fits_file(state_dict_elements(config), weights,
                        described_by=f"{str(config_path)!r}: models.out_channel {config.out_channel}")
        net = build_and_load(lambda: RetinaFace(config), read_state_dict(weights), source=str(weights))
        detector = cls(net, device=device, settings=settings, precision=precision)
        detector.weights_file = weights
        return detector

    @torch.inference_mode()
    def raw_outputs(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network outputs (float32) for a (B, H, W, 3) float32 mean-subtracted batch."""
        tensor = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).contiguous()
        return self.engine(tensor)  # type: ignore[return-value]

    @torch.inference_mode()
    def _raw_outputs_nchw(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.engine(batch)  # type: ignore[return-value]

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in RGB uint8 HxWx3 images (any sizes); one :class:`Detections` per image, in order.

        Images whose network inputs have equal sizes run as one batch (with ``settings.pad_batches``, inputs of
        different sizes share padded batches: :func:`.padded_batches.bucket_sizes`); each batch's input is built
        just before it runs, so at most one batch of network inputs exists at a time.
        """
        sizes = [network_input_size(*img.shape[:2], self.settings) for img in images]
        if self.settings.pad_batches:
            groups = bucket_sizes(sizes)
        else:
            exact: dict[tuple[int, int], list[int]] = {}
            for i, size in enumerate(sizes):
                exact.setdefault(size, []).append(i)
            groups = list(exact.items())
        results: list[Detections | None] = [None] * len(images)
        for shape, group in groups:
            for start in range(0, len(group), self.batch_size):
                members = group[start : start + self.batch_size]
                run_halving(lambda a, b: self._detect_rows(members[a:b], images, sizes, shape, results),
                            len(members), what="detector")
        return results  # type: ignore[return-value]

    @property
    def uses_batched_postprocess(self) -> bool:
        """Whether post-processing runs batched in torch on the device (see ``DetectionSettings``)."""
        flag = self.settings.batched_postprocess
        return self.device.type == "cuda" if flag is None else bool(flag)

    def _detect_rows(self, members, images, sizes, shape, results) -> None:
        """Detect ``members`` (indices into ``images``) as one batch of network inputs of ``shape`` (height, width)."""
        s = self.settings
        height, width = shape
        padded = any(sizes[i] != shape for i in members)
        batch = host_batch((len(members), 3, height, width), self.device, zeroed=padded)
        scales = []
        for row, i in enumerate(members):
            h, w = sizes[i]
            scales.append(network_planes(images[i], s, self.config.channel_order, out=batch[row, :, :h, :w])[1])
        loc, conf, landmarks = self._raw_outputs_nchw(batch)
        del batch
        cfg = self.config
        if not padded:
            priors = device_prior_boxes(height, width, cfg.min_sizes, cfg.steps, cfg.clip, loc.device)
            if self.uses_batched_postprocess:
                found = postprocess_batch(loc, conf, landmarks, priors, variances=cfg.variance, image_width=width,
                                          image_height=height, scales=scales, settings=self._postprocess_settings)
            else:
                found = [postprocess_detections(
                    loc[row], conf[row], landmarks[row], priors,
                    variances=cfg.variance, image_width=width, image_height=height, scale=scales[row],
                    confidence_threshold=s.confidence_threshold, top_k=s.top_k,
                    nms_threshold=s.nms_threshold, keep_top_k=s.keep_top_k,
                ) for row in range(len(members))]
        else:
            found = self._postprocess_padded(loc, conf, landmarks, [sizes[i] for i in members], shape, scales)
        for i, dets in zip(members, found):
            results[i] = dets

    @property
    def _postprocess_settings(self) -> PostprocessSettings:
        s = self.settings
        return PostprocessSettings(confidence_threshold=s.confidence_threshold, top_k=s.top_k,
                                   nms_threshold=s.nms_threshold, keep_top_k=s.keep_top_k)

    def _postprocess_padded(self, loc, conf, landmarks, sizes, shape, scales) -> list[Detections]:
        """Each row's own anchors (the cells of its unpadded input) decoded with its own size."""
        cfg, s, device = self.config, self.settings, loc.device
        rows = []
        for row, (h, w) in enumerate(sizes):
            index = torch.from_numpy(valid_anchor_index(h, w, *shape, cfg.min_sizes, cfg.steps)).to(device)
            priors = device_prior_boxes(h, w, cfg.min_sizes, cfg.steps, cfg.clip, device)
            rows.append((loc[row, index], conf[row, index], landmarks[row, index], priors, h, w))
        if not self.uses_batched_postprocess:
            return [postprocess_detections(
                l, c, m, p, variances=cfg.variance, image_width=w, image_height=h, scale=scale,
                confidence_threshold=s.confidence_threshold, top_k=s.top_k, nms_threshold=s.nms_threshold,
                keep_top_k=s.keep_top_k,
            ) for (l, c, m, p, h, w), scale in zip(rows, scales)]
        counts = [len(r[0]) for r in rows]
        ids = torch.repeat_interleave(torch.arange(len(rows), device=device), torch.tensor(counts, device=device))
        input_sizes = torch.cat([torch.tensor([[w, h]], dtype=torch.float32, device=device).expand(n, 2)
                                 for (_, _, _, _, h, w), n in zip(rows, counts)])
        return postprocess_rows(
            torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]), torch.cat([r[2] for r in rows]),
            torch.cat([r[3] for r in rows]), input_sizes, ids, scales, variances=cfg.variance,
            settings=self._postprocess_settings,
        )


def host_batch(shape: tuple[int, ...], device: torch.device, *, zeroed: bool) -> np.ndarray:
    """A float32 host array for a detector batch: in pinned (page-locked) memory when ``device`` is CUDA, so that
    the copy to the device is a fast DMA; zero-filled when ``zeroed`` (padding)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.zeros(shape, dtype=torch.float32, pin_memory=True).numpy()
    return np.zeros(shape, np.float32) if zeroed else np.empty(shape, np.float32)
