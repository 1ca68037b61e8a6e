"""FaceMask recognition: aligned 112x112 RGB crops -> L2-normalised 512-d embeddings, as the reference computes them.

Reference pre-processing (``MaskFaceRecognitionPipeline.preprocess``): RGB, CHW, ``(x / 255 - 0.5) / 0.5`` in float64
then float32; forward; ``emb /= sqrt(sum(emb ** 2))`` in float32. Here the per-pixel mapping is one exact 256-entry
lookup table and crops run in batches. A non-finite embedding (NaN/Inf weights or activations, or an all-zero
network output, which normalises to 0/0) is never returned: :meth:`FaceRecognizer.embed` raises
:class:`~modelscope_facemask.errors.EmbeddingError`, :meth:`FaceRecognizer.embed_rows` reports it per row.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engines import DEFAULT_ENGINE, check_engine, check_engine_setup
from ..engines.export_cache import network_engine
from ..engines.torch_engine import TorchEngine
from ..errors import ConfigurationError, EmbeddingError, ImageLoadError
from ..nets.iresnet import IResNet
from ..engines.precision import DEFAULT_PRECISION, check_precision, prepare_net
from .out_of_memory import run_halving

#: uint8 value -> network input, computed exactly as the reference does (float64 then float32)
PIXEL_TABLE = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
EMBEDDING_SIZE = 512
#: default recognizer batch on the CPU, and on CUDA (where large batches keep the GPU busy)
CPU_BATCH_SIZE = 32
CUDA_BATCH_SIZE = 256


def default_batch_size(device: torch.device | str) -> int:
    """The recognizer batch size used when none is given: 256 on CUDA, 32 elsewhere."""
    return CUDA_BATCH_SIZE if torch.device(device).type == "cuda" else CPU_BATCH_SIZE


def crops_to_tensor(crops_rgb: np.ndarray, *, pinned: bool = False) -> torch.Tensor:
    """(N, 112, 112, 3) uint8 RGB crops -> (N, 3, 112, 112) float32 network input; with ``pinned`` in page-locked
    host memory (for a non-blocking copy to a CUDA device; the same single copy of the values)."""
    values = torch.from_numpy(PIXEL_TABLE[crops_rgb]).permute(0, 3, 1, 2)
    if not pinned:
        return values.contiguous()
    return torch.empty(values.shape, dtype=values.dtype, pin_memory=True).copy_(values)


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation with the reference's float32 arithmetic."""
    embeddings = embeddings.astype(np.float32, copy=True)
    embeddings /= np.sqrt(np.sum(embeddings**2, -1, keepdims=True))
    return embeddings


def positive_batch_size(value: object) -> int:
    """``value`` as a batch size, or :class:`ConfigurationError` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {value!r}")
    return int(value)


class FaceRecognizer:
    """An IResNet plus the reference pre-processing and normalisation, batched.

    ``precision`` ('fp32', 'fp16', 'bf16'; see :mod:`modelscope_facemask.engines.precision`): the weights are cast once
    here; embeddings are returned in float32 whatever the precision. A batch that runs out of device memory is
    halved and retried (:func:`.out_of_memory.run_halving`).

    ``engine`` ('torch' (default), 'onnxruntime', 'openvino'; see :mod:`modelscope_facemask.engines`): what runs
    the network. The exported engines run the graph in ``engine_dir`` (written by ``facemask export``) or one
    exported on first use into the cache, keyed by the sha256 of ``weights_file`` (else of the state dict).
    """

    def __init__(self, net: IResNet, *, device: torch.device | str = "cpu", batch_size: int | None = None,
                 precision: str = DEFAULT_PRECISION, engine: str = DEFAULT_ENGINE,
                 weights_file: str | None = None, engine_dir: str | None = None) -> None:
        self.device = torch.device(device)
        self.precision = check_precision(precision, where="precision") or DEFAULT_PRECISION
        self.engine_name = check_engine(engine) or DEFAULT_ENGINE
        check_engine_setup(self.engine_name, self.device, self.precision)
        exported = self.engine_name != DEFAULT_ENGINE  # graphs are exported from the fp32 module
        self.net = prepare_net(net, self.device, "fp32" if exported else self.precision)
        self.batch_size = default_batch_size(self.device) if batch_size is None else positive_batch_size(batch_size)
        self.input_size = net.input_size
        #: what runs the network: the torch module (read at each call, so replacing ``self.net`` takes effect) or an
        #: exported graph (:func:`~modelscope_facemask.engines.export_cache.network_engine`)
        self.engine = TorchEngine(lambda: self.net, self.precision) if self.engine_name == DEFAULT_ENGINE else \
            network_engine(self.net, "recognizer", self.engine_name, precision=self.precision,
                           weights_file=weights_file, engine_dir=engine_dir)

    @torch.inference_mode()
    def embed_rows(self, crops_rgb: np.ndarray, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 112, 112, 3) uint8 RGB aligned crops -> ((N, 512) float32 L2-normalised embeddings, (N,) bool finite).

        Rows that are not finite are set to zero and marked False: callers must not use them.
        """
        crops_rgb = np.asarray(crops_rgb)
        size = self.input_size
        if crops_rgb.dtype != np.uint8 or crops_rgb.ndim != 4 or crops_rgb.shape[1:] != (size, size, 3):
            raise ImageLoadError(
                f"face crops must be uint8 (N, {size}, {size}, 3) RGB, got {crops_rgb.dtype} {crops_rgb.shape}; "
                "align faces first (modelscope_facemask.faces.align.warp_faces)"
            )
        out = [np.zeros((0, self.net.fc.out_features), np.float32)]
        step = self.batch_size if batch_size is None else positive_batch_size(batch_size)
        for start in range(0, len(crops_rgb), step):
            batch = crops_rgb[start : start + step]
            out += run_halving(lambda a, b: self._forward(batch[a:b]), len(batch), what="recognizer")
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            embeddings = l2_normalise(np.concatenate(out))
        finite = np.isfinite(embeddings).all(axis=1)
        embeddings[~finite] = 0.0
        return embeddings, finite

    def _forward(self, crops_rgb: np.ndarray) -> np.ndarray:
        """Raw float32 network outputs for one batch of uint8 crops."""
        pinned = self.device.type == "cuda" and self.engine_name == DEFAULT_ENGINE and torch.cuda.is_available()
        return self.engine(crops_to_tensor(crops_rgb, pinned=pinned))[0].float().cpu().numpy()

    def embed(self, crops_rgb: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB aligned crops -> (N, 512) float32 L2-normalised embeddings.

        Raises :class:`EmbeddingError` when any embedding is not finite.
        """
        embeddings, finite = self.embed_rows(crops_rgb, batch_size=batch_size)
        if not finite.all():
            raise EmbeddingError(non_finite_message(np.flatnonzero(~finite).tolist(), len(finite)))
        return embeddings


def non_finite_message(rows: list[int], total: int, what: str = "") -> str:
    """The error text for faces whose embeddings are not finite (``rows`` of ``total``)."""
    where = f" of {what}" if what else ""
    return (f"the recognizer produced a non-finite embedding (NaN or Inf) for face(s) {rows} of {total}{where}; "
            "the weights or the computation are broken (check the weights file; try device='cpu' in fp32)")
