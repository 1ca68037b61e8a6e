"""The registered FaceMask ``Model``: the IResNet recognizer behind ModelScope's Model API."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from modelscope.models.base import TorchModel
from modelscope.models.builder import MODELS
from modelscope.utils.constant import Tasks

from ..model_files.checkpoints import build_and_load, check_fits_file, find_weights_file, read_state_dict
from .configuration import CONFIGURATION_FILE, facemask_settings, read_configuration
from ..engines.devices import check_device_type, resolve_device
from ..engines import check_engine, check_engine_setup, check_int8_request
from ..faces.recognizer import FaceRecognizer, positive_batch_size
from ..support.log import logger
from ..model_files.manifest import verify_manifest
from ..metainfo import Models
from ..model_files.model_folders import local_model_dir
from ..nets.iresnet import IResNet, state_dict_elements
from ..engines.precision import check_precision, check_precision_on_device


@MODELS.register_module(Tasks.face_recognition, module_name=Models.facemask)
class FaceMaskModel(TorchModel):
    """FaceMask recognizer: aligned 112x112 RGB uint8 crops -> (N, 512) L2-normalised float32 embeddings.

    ``precision``: 'fp32', 'fp16' (CUDA only), 'bf16' or 'int8' (engine 'openvino' with the ``engine_dir`` of
    ``facemask quantize``); ``None`` takes configuration.json's ``model.precision``
    (default 'fp32'). The weights are cast once, here. ``engine``: 'torch', 'onnxruntime' or 'openvino'; ``None``
    takes configuration.json's ``model.engine`` (default 'torch'); ``engine_dir``: a folder written by
    ``facemask export`` (default: export on first use into the cache, see :mod:`modelscope_facemask.engines`).
    """

    def __init__(self, model_dir: str, device: str | torch.device | None = "auto", batch_size: int | None = None,
                 precision: str | None = None, engine: str | None = None, engine_dir: str | None = None,
                 **kwargs: Any) -> None:
        check_device_type(device)
        batch_size = None if batch_size is None else positive_batch_size(batch_size)  # None: 32, or 256 on CUDA
        precision = check_precision(precision)
        engine = check_engine(engine)
        super().__init__(model_dir)
        settings = facemask_settings(read_configuration(model_dir))
        self.precision = precision or settings.precision
        self.engine = engine or settings.engine
        check_int8_request(self.engine, self.precision, engine_dir)  # before any weights are read
        weights = find_weights_file(model_dir)
        config = os.path.join(model_dir, CONFIGURATION_FILE)
        verify_manifest(model_dir, [config, weights])  # packed repositories: both files listed and unchanged
        check_fits_file(state_dict_elements(settings.units), weights,  # before building: units of any size are instant
                        described_by=f"{config!r}: model.backbone.units {list(settings.units)}")
        # built on the meta device, the (memory-mapped) file's tensors become its weights: no second copy
        net = build_and_load(lambda: IResNet(settings.units), read_state_dict(weights), source=str(weights))
        self.device_used = resolve_device(device)
        self.recognizer = FaceRecognizer(net, device=self.device_used, batch_size=batch_size, precision=self.precision,
                                         engine=self.engine, weights_file=str(weights), engine_dir=engine_dir)
        self.net = self.recognizer.net
        self.weights_file = weights
        logger.info("FaceMask recognizer loaded from %s on %s (%s, engine %s)", weights, self.device_used,
                    self.precision, self.engine)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, revision: str | None = None, device: str | None = "auto",
                        **kwargs: Any) -> "FaceMaskModel":
        """Load from a local folder or a hub id; works with the official card (no ``model.type``) and ours."""
        for key in ("model_prefetched", "invoked_by", "cfg_dict", "trust_remote_code", "device_map", "task"):
            kwargs.pop(key, None)
        return cls(local_model_dir(model_name_or_path, revision), device=device, **kwargs)

    def use_device(self, device: torch.device) -> None:
        """Run the recognizer on ``device`` from now on (its precision stays; fp16 cannot move to the CPU)."""
        check_precision_on_device(self.precision, torch.device(device))
        check_engine_setup(self.engine, torch.device(device), self.precision)
        self.device_used = torch.device(device)
        self.recognizer.net.to(self.device_used)
        self.recognizer.device = self.device_used

    def embed(self, crops_rgb: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB aligned crops -> (N, 512) float32 unit rows; :class:`EmbeddingError` when any
        embedding is not finite."""
        return self.recognizer.embed(crops_rgb, batch_size=batch_size)

    def embed_rows(self, crops_rgb: np.ndarray, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and a per-row "finite" flag (rows flagged False are zeros and must not be used)."""
        return self.recognizer.embed_rows(crops_rgb, batch_size=batch_size)

    def forward(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """``{'img': (N, 112, 112, 3) uint8 RGB crops}`` -> ``{'img_embedding': (N, 512)}`` (raises
        :class:`EmbeddingError` rather than return a non-finite embedding)."""
        crops = inputs["img"]
        if isinstance(crops, torch.Tensor):
            crops = crops.cpu().numpy()
        crops = np.asarray(crops)
        return {"img_embedding": self.embed(crops[None] if crops.ndim == 3 else crops)}
