"""The registered FaceMask ``Preprocessor``: load images, detect faces (RetinaFace), choose, align to 112x112."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from modelscope.preprocessors.base import Preprocessor
from modelscope.preprocessors.builder import PREPROCESSORS
from modelscope.utils.constant import Fields, ModeKeys

from .configuration import (
    CONFIGURATION_FILE,
    FaceMaskSettings,
    facemask_settings,
    read_configuration,
    resolve_detector_dir,
)
from ..engines.devices import resolve_device
from ..engines import DEFAULT_ENGINE, check_engine, check_engine_setup, check_int8_request
from ..errors import FaceMaskError
from ..faces.choose import validate_max_faces
from ..faces.detector import DetectionSettings, FaceDetector, check_batched_postprocess, check_det_max_side, \
    check_detectable, check_pad_batches, resize_factor
from ..faces.images import as_image_error, describe_source, load_image
from ..faces.prepare import PreparedFaces, prepare_faces_each
from ..support.log import logger
from ..engines.precision import check_precision, check_precision_on_device
from ..model_files.manifest import verify_manifest
from ..metainfo import Preprocessors
from ..model_files.model_folders import local_model_dir
from .keywords import check_detector_model, check_min_face_size, check_use_det

_KEEP = object()


@PREPROCESSORS.register_module(Fields.cv, module_name=Preprocessors.facemask_preprocessor)
class FaceMaskPreprocessor(Preprocessor):
    """Images -> chosen faces and their aligned RGB crops. The detector loads on first use.

    ``precision`` ('fp32', 'fp16' (CUDA only), 'bf16'; ``None``: configuration.json's ``model.precision``, default
    'fp32') is the detector's; its weights are cast once when it loads. ``det_max_side`` (opt-in; ``None``:
    configuration.json's ``preprocessor.det_max_side``, default the reference's 1500/1000 rule) = N detects on a copy
    whose longer side is at most N px; boxes and landmarks come back in original pixels and crops are aligned from the
    original image. It is fixed when the preprocessor is built (not a per-call option). ``engine`` ('torch',
    'onnxruntime', 'openvino'; ``None``: configuration.json's ``model.engine``, default 'torch') runs the detector
    network, from the graphs in ``engine_dir`` (``facemask export``) or exported on first use into the cache.
    ``pad_batches`` (opt-in; ``None``: configuration.json's ``preprocessor.pad_batches``, default False) batches images
    of different sizes together, padded; ``batched_postprocess`` (True, False, or None = on CUDA only; omitted:
    configuration.json's ``preprocessor.batched_postprocess``) post-processes each batch in torch on the device.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        detector: str | None = None,
        device: str | torch.device | None = "auto",
        use_det: bool | None = None,
        max_faces: int | None | object = _KEEP,
        min_face_size: float | None = None,
        precision: str | None = None,
        det_max_side: int | None = None,
        engine: str | None = None,
        engine_dir: str | None = None,
        pad_batches: bool | None = None,
        batched_postprocess: bool | None | object = _KEEP,
        mode: str = ModeKeys.INFERENCE,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode)
        use_det, min_face_size = check_use_det(use_det), check_min_face_size(min_face_size)
        precision = check_precision(precision)
        det_max_side = check_det_max_side(det_max_side)
        engine = check_engine(engine)
        pad_batches = check_pad_batches(pad_batches)
        if batched_postprocess is not _KEEP:
            batched_postprocess = check_batched_postprocess(batched_postprocess)
        detector = check_detector_model(detector, where="detector")
        self.device_used = resolve_device(device)
        self.model_dir = model_dir
        if model_dir:  # a packed repository's manifest covers its configuration.json (and its detector folder)
            verify_manifest(model_dir, [os.path.join(model_dir, CONFIGURATION_FILE)])
        base = facemask_settings(read_configuration(model_dir)) if model_dir else FaceMaskSettings()
        self.settings = FaceMaskSettings(
            detector=detector or base.detector,
            units=base.units,
            max_faces=base.max_faces if max_faces is _KEEP else max_faces,  # type: ignore[arg-type]
            use_det=base.use_det if use_det is None else use_det,
            min_face_size=base.min_face_size if min_face_size is None else min_face_size,
            precision=precision or base.precision,
            det_max_side=base.det_max_side if det_max_side is None else det_max_side,
            engine=engine or base.engine,
            pad_batches=base.pad_batches if pad_batches is None else pad_batches,
            batched_postprocess=(base.batched_postprocess if batched_postprocess is _KEEP
                                 else batched_postprocess),  # type: ignore[arg-type]
        )
        self.engine_dir = engine_dir
        validate_max_faces(self.settings.max_faces)
        check_precision_on_device(self.settings.precision, self.device_used)
        check_engine_setup(self.settings.engine, self.device_used, self.settings.precision)
        check_int8_request(self.settings.engine, self.settings.precision, engine_dir)
        self._detector: FaceDetector | None = None
        if self.settings.use_det:
            _ = self.detector  # load now, so that a bad detector fails at construction, not at the first image

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, revision: str | None = None, **kwargs: Any) -> "FaceMaskPreprocessor":
        """Build from a local model folder or hub id (works with the official card and ours)."""
        for key in ("cfg_dict", "preprocessor_mode", "trust_remote_code", "task", "field"):
            kwargs.pop(key, None)
        return cls(model_dir=local_model_dir(model_name_or_path, revision), **kwargs)

    def use_device(self, device: torch.device) -> None:
        """Run detection on ``device`` from now on (its precision stays; fp16 cannot move to the CPU)."""
        check_precision_on_device(self.precision, torch.device(device))
        check_engine_setup(self.settings.engine, torch.device(device), self.precision)
        self.device_used = torch.device(device)
        if self._detector is not None:
            self._detector.net.to(self.device_used)
            self._detector.device = self.device_used

    @property
    def detector(self) -> FaceDetector:
        """The RetinaFace detector (configuration's, or the ``detector`` override), loaded once."""
        if self._detector is None:
            folder = resolve_detector_dir(self.settings.detector, self.model_dir)
            settings = DetectionSettings(det_max_side=self.settings.det_max_side,
                                         pad_batches=self.settings.pad_batches,
                                         batched_postprocess=self.settings.batched_postprocess)
            exported = self.settings.engine != DEFAULT_ENGINE  # graphs are exported from the fp32 module
            self._detector = FaceDetector.from_pretrained(folder, device=self.device_used, settings=settings,
                                                          precision="fp32" if exported else self.precision,
                                                          repository=self.model_dir or None)
            if exported:
                from ..engines.export_cache import network_engine

                self._detector.engine = network_engine(self._detector.net, "detector", self.settings.engine,
                                                       precision=self.precision,
                                                       weights_file=self._detector.weights_file,
                                                       engine_dir=self.engine_dir)
            runs = self.precision if self.precision != "int8" or getattr(self._detector.engine, "int8", False) \
                else "fp32: the int8 folder keeps the detector in fp32"
            logger.info("RetinaFace detector (%s) loaded from %s on %s (%s)", self._detector.config.name, folder,
                        self.device_used, runs)
        return self._detector

    @property
    def precision(self) -> str:
        """The detector's precision: 'fp32', 'fp16' or 'bf16'."""
        return self.settings.precision

    def prepare(
        self, inputs: Sequence[Any], *, use_det: bool | None = None, max_faces: int | None | object = _KEEP,
        loaded: Sequence[Any] | None = None,
    ) -> list[PreparedFaces | FaceMaskError]:
        """Prepare many images; an input that fails yields its error in its slot, the rest go on.

        Any exception while reading one input or finding its faces becomes that slot's error: our own classes as
        they are, anything else as ``ImageLoadError`` (reading) or ``FacePreparationError`` (detection,
        alignment), chained to the cause. Images that detection downsizes (longer side > 1500 px, or > ``det_max_side``), and all images
        when ``use_det`` is off, are prepared as soon as they are loaded, so at most one of them is held at a time;
        the others are detected together, batched per size. ``loaded``: the inputs already decoded by
        :func:`~modelscope_facemask.faces.images.load_image` (each an image or the exception it raised), e.g. by
        :func:`~modelscope_facemask.faces.decode_ahead.chunks_ahead`.
        """
        use_det = self.settings.use_det if use_det is None else check_use_det(use_det)
        max_faces = self.settings.max_faces if max_faces is _KEEP else max_faces
        validate_max_faces(max_faces)
        detector = self.detector if use_det else None
        options = {"max_faces": max_faces, "min_face_size": self.settings.min_face_size}
        results: list[PreparedFaces | FaceMaskError | None] = [None] * len(inputs)
        images, slots = [], []
        for i, item in enumerate(inputs):
            label = describe_source(item)
            try:
                image = load_image(item) if loaded is None else loaded[i]
                if isinstance(image, BaseException):
                    raise image
                if detector is not None:
                    check_detectable(image, detector.settings, label=label)
            except Exception as exc:  # never let one input sink the list
                results[i] = as_image_error(exc, item)
                continue
            if detector is None or resize_factor(*image.shape[:2], detector.settings) != 1.0:
                results[i] = prepare_faces_each([image], [label], detector, **options)[0]
                del image
                continue
            images.append(image)
            slots.append(i)
        batched = prepare_faces_each(images, [describe_source(inputs[i]) for i in slots], detector, **options)
        for i, prepared in zip(slots, batched):
            results[i] = prepared
        for item, prepared in zip(inputs, results):
            if isinstance(prepared, PreparedFaces) and len(prepared) == 0 and detector is not None:
                logger.info("no face found in %s", describe_source(item))
        return results  # type: ignore[return-value]

    def __call__(self, data: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """One image -> ``{'img': crops, 'boxes', 'scores', 'keypoints'}``; raises on a bad input."""
        result = self.prepare([data], **kwargs)[0]
        if isinstance(result, FaceMaskError):
            raise result
        dets = result.detections
        return {"img": result.crops, "boxes": dets.boxes, "scores": dets.scores, "keypoints": dets.landmarks}
