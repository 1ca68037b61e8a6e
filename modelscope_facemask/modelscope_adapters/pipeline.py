"""The registered FaceMask ``Pipeline``: a drop-in for ModelScope's built-in ``resnet-face-recognition-facemask``.

Output per image (rows aligned, original-image pixels): ``img_embedding`` float32 (N, 512) unit rows,
``scores`` (N,), ``boxes`` (N, 4) ``[x1, y1, x2, y2]``, ``keypoints`` (N, 10). No face: N = 0. A list input gives
a list of such dicts, computed in batches; an item that cannot be loaded gets N = 0 and an ``error`` message.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines.base import Pipeline
from modelscope.pipelines.builder import PIPELINES
from modelscope.utils.constant import Tasks

from ..devices import resolve_device
from ..errors import FaceMaskError
from ..faces.prepare import PreparedFaces
from ..log import logger
from ..metainfo import Pipelines
from ..model_dirs import local_model_dir
from .model import FaceMaskModel
from .preprocessor import _KEEP, FaceMaskPreprocessor

EMBEDDING_SIZE = 512
ERROR_KEY = "error"
#: images decoded and detected at a time by a list call (memory stays bounded for long lists)
IMAGES_PER_CHUNK = 16


def empty_output(embedding_size: int = EMBEDDING_SIZE) -> dict[str, np.ndarray]:
    """The output of an image without faces."""
    return {
        OutputKeys.IMG_EMBEDDING: np.zeros((0, embedding_size), np.float32),
        OutputKeys.SCORES: np.zeros((0,), np.float32),
        OutputKeys.BOXES: np.zeros((0, 4), np.float32),
        OutputKeys.KEYPOINTS: np.zeros((0, 10), np.float32),
    }


@PIPELINES.register_module(Tasks.face_recognition, module_name=Pipelines.facemask)
class FaceMaskPipeline(Pipeline):
    """Face recognition: image(s) -> detected faces -> aligned crops -> FaceMask embeddings.

    Keyword arguments: ``device`` ('gpu' (default, falls back to CPU with a warning), 'cpu', 'cuda', 'cuda:N'),
    ``use_det`` (False = resize the whole image to 112x112 like the built-in), ``max_faces`` (1 = the largest face;
    None = all), ``detector_model`` (hub id or local folder of a RetinaFace model), ``batch_size`` (recognizer).
    ``use_det``, ``max_faces`` and ``batch_size`` may also be given per call.
    """

    def __init__(
        self,
        model: str | FaceMaskModel,
        preprocessor: FaceMaskPreprocessor | None = None,
        device: str | torch.device | None = "gpu",
        use_det: bool | None = None,
        max_faces: int | None | object = _KEEP,
        detector_model: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        self.device_used = resolve_device(device)
        if isinstance(model, FaceMaskModel):
            model_dir = model.model_dir
            if model.device_used != self.device_used:
                logger.warning("the given model is on %s; moving it to the pipeline's device %s", model.device_used,
                               self.device_used)
                model.use_device(self.device_used)
        else:
            model_dir = local_model_dir(model)
            model = FaceMaskModel.from_pretrained(model_dir, device=self.device_used, batch_size=batch_size)
        if preprocessor is None:
            preprocessor = FaceMaskPreprocessor.from_pretrained(
                model_dir, device=self.device_used, detector=detector_model, use_det=use_det, max_faces=max_faces
            )
        elif isinstance(preprocessor, FaceMaskPreprocessor):
            if detector_model is not None or use_det is not None or max_faces is not _KEEP:
                logger.warning("a preprocessor was given: detector_model, use_det and max_faces of the pipeline are "
                               "ignored (set them on the preprocessor, or per call: use_det, max_faces)")
            if preprocessor.device_used != self.device_used:
                preprocessor.use_device(self.device_used)
        kwargs.pop("model_revision", None)
        device_name = "cpu" if self.device_used.type == "cpu" else f"cuda:{self.device_used.index or 0}"
        super().__init__(model=model, preprocessor=preprocessor, device=device_name, **kwargs)
        logger.info("FaceMask pipeline runs on %s in fp32", self.device_used)

    @property
    def device_name_used(self) -> str:
        """The device actually running, e.g. 'cpu' or 'cuda:0'."""
        return str(self.device_used)

    def __call__(self, input: Any, *args: Any, **kwargs: Any) -> dict[str, np.ndarray] | list[dict[str, Any]]:
        """One input -> one output dict (a bad input raises); a list -> a list of dicts (bad items carry ``error``)."""
        if isinstance(input, (list, tuple)):
            return self.run_batch(list(input), **kwargs)
        return self.run_batch([input], raise_errors=True, **kwargs)[0]

    def run_batch(self, inputs: list[Any], *, use_det: bool | None = None, max_faces: int | None | object = _KEEP,
                  batch_size: int | None = None, raise_errors: bool = False) -> list[dict[str, Any]]:
        """Process many inputs in chunks of :data:`IMAGES_PER_CHUNK` (bounded memory): per chunk, detection batched
        per image size, then one batched recognizer pass.

        An input that cannot be loaded gives an empty output with an ``error`` message (or raises with
        ``raise_errors=True``); the other inputs are unaffected.
        """
        outputs: list[dict[str, Any]] = []
        for start in range(0, len(inputs), IMAGES_PER_CHUNK):
            chunk = inputs[start : start + IMAGES_PER_CHUNK]
            outputs += self._run_chunk(chunk, use_det, max_faces, batch_size, raise_errors)
        return outputs

    def _run_chunk(self, inputs: list[Any], use_det: bool | None, max_faces: int | None | object,
                   batch_size: int | None, raise_errors: bool) -> list[dict[str, Any]]:
        prepared = self.preprocessor.prepare(inputs, use_det=use_det, max_faces=max_faces)
        faces = [p for p in prepared if isinstance(p, PreparedFaces)]
        if raise_errors and len(faces) < len(prepared):
            raise next(p for p in prepared if isinstance(p, FaceMaskError))
        crops = np.concatenate([p.crops for p in faces]) if faces else np.zeros((0, 112, 112, 3), np.uint8)
        embeddings = self.model.embed(crops, batch_size=batch_size)
        outputs: list[dict[str, Any]] = []
        start = 0
        for item in prepared:
            if isinstance(item, FaceMaskError):
                logger.warning("skipped input: %s", item)
                outputs.append({**empty_output(embeddings.shape[1]), ERROR_KEY: str(item)})
                continue
            count = len(item)
            outputs.append({
                OutputKeys.IMG_EMBEDDING: embeddings[start : start + count],
                OutputKeys.SCORES: item.detections.scores,
                OutputKeys.BOXES: item.detections.boxes,
                OutputKeys.KEYPOINTS: item.detections.landmarks,
            })
            start += count
        return outputs

    # ModelScope's abstract stages, for callers that drive a pipeline stage by stage
    def preprocess(self, input: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        return self.preprocessor(input, **kwargs)

    def forward(self, input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = dict(input)
        out[OutputKeys.IMG_EMBEDDING] = self.model.embed(np.asarray(input["img"]))
        return out

    def postprocess(self, inputs: dict[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
        return {
            OutputKeys.IMG_EMBEDDING: inputs[OutputKeys.IMG_EMBEDDING],
            OutputKeys.SCORES: inputs["scores"],
            OutputKeys.BOXES: inputs["boxes"],
            OutputKeys.KEYPOINTS: inputs["keypoints"],
        }
