"""The registered FaceMask ``Pipeline``: a drop-in for ModelScope's built-in ``resnet-face-recognition-facemask``.

Output per image (rows aligned, original-image pixels): ``img_embedding`` float32 (N, 512) unit rows,
``scores`` (N,), ``boxes`` (N, 4) ``[x1, y1, x2, y2]``, ``keypoints`` (N, 10). No face: N = 0. A list input gives
a list of such dicts, computed in batches; an item that cannot be loaded, or whose embedding is not finite, gets
N = 0 and an ``error`` message. Keyword arguments are checked by :mod:`.keywords` (wrong types raise
``ConfigurationError``; unknown names are a WARNING at construction and an ``UnknownOptionError`` per call).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines.base import Pipeline
from modelscope.pipelines.builder import PIPELINES
from modelscope.utils.constant import Tasks

from ..engines.devices import resolve_device
from ..errors import ConfigurationError, EmbeddingError, UnknownOptionError
from ..faces.decode_ahead import chunks_ahead
from ..faces.images import describe_source, load_image
from ..faces.prepare import PreparedFaces
from ..faces.recognizer import non_finite_message
from ..support.log import logger
from ..metainfo import Pipelines
from ..model_files.model_folders import local_model_dir
from .keywords import MODELSCOPE_PIPELINE_KEYWORDS, PIPELINE_OPTIONS, check_call_options, check_option, \
    unknown_keyword_message
from .model import FaceMaskModel
from .preprocessor import _KEEP, FaceMaskPreprocessor
from .registration import override_builtin_pipeline

EMBEDDING_SIZE = 512
ERROR_KEY = "error"
#: images decoded and detected at a time by a list call (memory stays bounded for long lists); on CUDA more
IMAGES_PER_CHUNK = 16
CUDA_IMAGES_PER_CHUNK = 64


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

    Keyword arguments: ``device`` ('auto' (default; ModelScope's ``pipeline()`` passes 'gpu', which means the same:
    CUDA when available, else the CPU, logged once at INFO), 'cpu', 'cuda', 'cuda:N'),
    ``use_det`` (False = resize the whole image to 112x112 like the built-in), ``max_faces`` (1 = the largest face;
    None = all), ``detector_model`` (hub id or local folder of a RetinaFace model), ``batch_size`` (recognizer;
    default 32, 256 on CUDA),
    ``precision`` ('fp32' (default: configuration.json's ``model.precision``, else fp32), 'fp16' (CUDA only),
    'bf16'; the recognizer's and the detector's weights are cast once; or 'int8': the graphs of a
    ``facemask quantize`` folder, with engine='openvino' and its ``engine_dir``), ``det_max_side`` (opt-in, int >= 32: detect on
    a copy whose longer side is at most that many px, results in original pixels; default: configuration.json's
    ``preprocessor.det_max_side``, else the reference's 1500/1000 rule), ``engine`` ('torch' (default:
    configuration.json's ``model.engine``, else torch), 'onnxruntime' or 'openvino': both networks on that engine, CPU
    only, fp32 (openvino also bf16 on CPUs with bf16 hardware)), ``engine_dir`` (a folder written by
    ``facemask export``; default: export on first use into the cache), ``pad_batches`` (opt-in: detect images of
    different sizes in shared, padded batches; default: configuration.json's ``preprocessor.pad_batches``, else
    False) and ``batched_postprocess`` (True/False, None = on CUDA only, the default; also
    ``preprocessor.batched_postprocess``).
    ``use_det``, ``max_faces`` and ``batch_size`` may also be given per call. Unknown keywords are logged at WARNING
    (naming the closest option) and ignored, except those ModelScope itself passes.
    """

    def __init__(
        self,
        model: str | FaceMaskModel,
        preprocessor: FaceMaskPreprocessor | None = None,
        device: str | torch.device | None = "auto",
        use_det: bool | None = None,
        max_faces: int | None | object = _KEEP,
        detector_model: str | None = None,
        batch_size: int | object = _KEEP,
        precision: str | None = None,
        det_max_side: int | None = None,
        engine: str | None = None,
        engine_dir: str | None = None,
        pad_batches: bool | None = None,
        batched_postprocess: bool | None | object = _KEEP,
        **kwargs: Any,
    ) -> None:
        use_det = check_option("use_det", use_det)
        precision = check_option("precision", precision)
        det_max_side = check_option("det_max_side", det_max_side)
        engine = check_option("engine", engine)
        engine_dir = check_option("engine_dir", engine_dir)
        pad_batches = check_option("pad_batches", pad_batches)
        detection = {} if batched_postprocess is _KEEP else \
            {"batched_postprocess": check_option("batched_postprocess", batched_postprocess)}
        if max_faces is not _KEEP:
            check_option("max_faces", max_faces)
        # not given: 32, or 256 on CUDA (FaceMaskModel's default); given: a positive integer
        batch_size = None if batch_size is _KEEP else check_option("batch_size", batch_size)
        detector_model = check_option("detector_model", detector_model)
        kwargs = _modelscope_keywords(kwargs)
        self.device_used = resolve_device(device)
        model, model_dir = self._open_model(model, batch_size=batch_size, precision=precision, engine=engine,
                                            engine_dir=engine_dir)
        detection.update(detector=detector_model, use_det=use_det, max_faces=max_faces, det_max_side=det_max_side,
                         pad_batches=pad_batches)
        preprocessor = self._open_preprocessor(preprocessor, model, model_dir, precision=precision, engine=engine,
                                               engine_dir=engine_dir, detection=detection)
        kwargs.pop("model_revision", None)  # already used to download the model
        device_name = "cpu" if self.device_used.type == "cpu" else f"cuda:{self.device_used.index or 0}"
        super().__init__(model=model, preprocessor=preprocessor, device=device_name, **kwargs)
        #: decode the next chunk of a list in a thread while this one computes (at most two chunks decoded at a
        #: time); on by default on CUDA, where the host would otherwise idle the GPU while decoding
        self.decode_ahead = self.device_used.type == "cuda"
        logger.info("FaceMask pipeline runs on %s in %s, engine %s%s", self.device_used, self.precision, self.engine,
                    _int8_note(self.int8_networks))

    def _open_model(self, model: str | FaceMaskModel, *, batch_size: int | None, precision: str | None,
                    engine: str | None, engine_dir: str | None) -> tuple[FaceMaskModel, str]:
        """The recognizer on this pipeline's device: ``model`` itself (moved if needed), or loaded from its folder."""
        if not isinstance(model, FaceMaskModel):
            model_dir = local_model_dir(model)
            return FaceMaskModel.from_pretrained(model_dir, device=self.device_used, batch_size=batch_size,
                                                 precision=precision, engine=engine, engine_dir=engine_dir), model_dir
        _check_same_precision(precision, model.precision, "model")
        _check_same_engine(engine, model.engine, "model")
        if model.device_used != self.device_used:
            logger.warning("the given model is on %s; moving it to the pipeline's device %s", model.device_used,
                           self.device_used)
            model.use_device(self.device_used)
        return model, model.model_dir

    def _open_preprocessor(self, preprocessor: FaceMaskPreprocessor | None, model: FaceMaskModel, model_dir: str, *,
                           precision: str | None, engine: str | None, engine_dir: str | None,
                           detection: dict[str, Any]) -> FaceMaskPreprocessor | None:
        """The detector side: ``preprocessor`` itself (on this device; the detection options are then ignored, with a
        warning), or built from the model folder with them (None, or ``_KEEP`` for max_faces, means not given)."""
        if preprocessor is None:
            return FaceMaskPreprocessor.from_pretrained(
                model_dir, device=self.device_used, precision=precision or model.precision,
                engine=engine or model.engine, engine_dir=engine_dir, **detection)
        if isinstance(preprocessor, FaceMaskPreprocessor):
            _check_same_precision(precision, preprocessor.precision, "preprocessor")
            _check_same_engine(engine, preprocessor.settings.engine, "preprocessor")
            given = [key for key in ("detector", "use_det", "det_max_side", "pad_batches")
                     if detection[key] is not None]
            if given or detection["max_faces"] is not _KEEP or "batched_postprocess" in detection:
                logger.warning("a preprocessor was given: detector_model, use_det, max_faces, det_max_side, "
                               "pad_batches and batched_postprocess of the pipeline are "
                               "ignored (set them on the preprocessor, or per call: use_det, max_faces)")
            if preprocessor.device_used != self.device_used:
                preprocessor.use_device(self.device_used)
        return preprocessor

    @property
    def precision(self) -> str:
        """The precision running: 'fp32', 'fp16' or 'bf16' (with the detector's when it differs)."""
        ours = self.model.precision
        theirs = getattr(self.preprocessor, "precision", ours)
        return ours if theirs == ours else f"{ours} (recognizer), {theirs} (detector)"

    @property
    def engine(self) -> str:
        """The engine running: 'torch', 'onnxruntime' or 'openvino' (with the detector's when it differs)."""
        ours = self.model.engine
        settings = getattr(self.preprocessor, "settings", None)
        theirs = getattr(settings, "engine", ours)
        return ours if theirs == ours else f"{ours} (recognizer), {theirs} (detector)"

    @property
    def int8_networks(self) -> dict[str, bool]:
        """With precision 'int8': which networks run int8 graphs (``recognizer``, ``detector``); else empty."""
        engines = {"recognizer": getattr(self.model, "recognizer", None)}
        detector = getattr(self.preprocessor, "_detector", None)
        if detector is not None:
            engines["detector"] = detector
        return {kind: bool(getattr(owner.engine, "int8", False)) for kind, owner in engines.items()
                if owner is not None and getattr(owner.engine, "precision", None) == "int8"}

    @property
    def device_name_used(self) -> str:
        """The device actually running, e.g. 'cpu' or 'cuda:0'."""
        return str(self.device_used)

    def __call__(self, input: Any, *args: Any, **kwargs: Any) -> dict[str, np.ndarray] | list[dict[str, Any]]:
        """One input -> one output dict (a bad input raises); a list -> a list of dicts (bad items carry ``error``).

        Per-call keywords: ``use_det``, ``max_faces``, ``batch_size``; anything else raises ``UnknownOptionError``.
        """
        if args:
            raise UnknownOptionError(f"FaceMaskPipeline takes one input (an image or a list of images) and keyword "
                                     f"options; got {len(args)} extra positional argument(s): pass options by name "
                                     "(use_det=..., max_faces=..., batch_size=...)")
        preprocess_params, forward_params, _ = self._sanitize_parameters(**kwargs)
        options = {**preprocess_params, **forward_params}
        if isinstance(input, (list, tuple)):
            return self.run_batch(list(input), **options)
        return self.run_batch([input], raise_errors=True, **options)[0]

    def _sanitize_parameters(self, **pipeline_parameters: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Per-call keywords split as ModelScope's ``Pipeline.__call__`` expects: (preprocess: ``use_det``,
        ``max_faces``; forward: ``batch_size``; postprocess: none), type-checked; unknown names raise."""
        options = check_call_options(pipeline_parameters)
        preprocess = {k: v for k, v in options.items() if k in ("use_det", "max_faces")}
        forward = {k: v for k, v in options.items() if k == "batch_size"}
        return preprocess, forward, {}

    def run_batch(self, inputs: list[Any], *, use_det: bool | None = None, max_faces: int | None | object = _KEEP,
                  batch_size: int | None = None, raise_errors: bool = False,
                  loaded: list[Any] | None = None) -> list[dict[str, Any]]:
        """Process many inputs in chunks of :data:`IMAGES_PER_CHUNK` (bounded memory): per chunk, detection batched
        per image size, then one batched recognizer pass.

        An input that cannot be loaded, or whose embedding is not finite, gives an empty output with an ``error``
        message (or raises with ``raise_errors=True``); the other inputs are unaffected. ``loaded``: the inputs
        already decoded (each an image or the exception decoding raised), as a caller decoding ahead passes them.
        With ``decode_ahead`` (on CUDA) the next chunk is decoded in a thread while this one computes.
        """
        given = {"use_det": use_det, "batch_size": batch_size}
        if max_faces is not _KEEP:
            given["max_faces"] = max_faces
        given = check_call_options(given)
        use_det, batch_size = given["use_det"], given["batch_size"]
        outputs: list[dict[str, Any]] = []
        per_chunk = CUDA_IMAGES_PER_CHUNK if self.device_used.type == "cuda" else IMAGES_PER_CHUNK
        starts = range(0, len(inputs), per_chunk)
        if loaded is not None:
            if len(loaded) != len(inputs):
                raise ConfigurationError(f"loaded holds {len(loaded)} images for {len(inputs)} inputs")
            chunks = ((inputs[i : i + per_chunk], list(loaded[i : i + per_chunk])) for i in starts)
        elif self.decode_ahead and len(inputs) > 1:
            chunks = chunks_ahead(inputs, per_chunk, load_image)
        else:  # each chunk is decoded by the preprocessor itself
            chunks = ((inputs[i : i + per_chunk], None) for i in starts)
        for chunk, decoded in chunks:
            outputs += self._run_chunk(chunk, use_det, max_faces, batch_size, raise_errors, decoded)
        return outputs

    def _run_chunk(self, inputs: list[Any], use_det: bool | None, max_faces: int | None | object,
                   batch_size: int | None, raise_errors: bool, loaded: list[Any] | None = None) -> list[dict[str, Any]]:
        prepared = self.preprocessor.prepare(inputs, use_det=use_det, max_faces=max_faces, loaded=loaded)
        faces = [p for p in prepared if isinstance(p, PreparedFaces)]
        if raise_errors and len(faces) < len(prepared):
            raise next(p for p in prepared if not isinstance(p, PreparedFaces))
        crops = np.concatenate([p.crops for p in faces]) if faces else np.zeros((0, 112, 112, 3), np.uint8)
        embeddings, finite = self.model.embed_rows(crops, batch_size=batch_size)
        outputs: list[dict[str, Any]] = []
        start = 0
        for source, item in zip(inputs, prepared):
            if not isinstance(item, PreparedFaces):
                logger.warning("skipped input: %s", item)
                outputs.append({**empty_output(embeddings.shape[1]), ERROR_KEY: str(item)})
                continue
            count = len(item)
            rows = slice(start, start + count)
            start += count
            if not finite[rows].all():  # never hand out NaN/Inf rows: the whole image is an error
                error = EmbeddingError(non_finite_message(np.flatnonzero(~finite[rows]).tolist(), count,
                                                          describe_source(source)))
                if raise_errors:
                    raise error
                logger.warning("skipped input: %s", error)
                outputs.append({**empty_output(embeddings.shape[1]), ERROR_KEY: str(error)})
                continue
            outputs.append({
                OutputKeys.IMG_EMBEDDING: embeddings[rows],
                OutputKeys.SCORES: item.detections.scores,
                OutputKeys.BOXES: item.detections.boxes,
                OutputKeys.KEYPOINTS: item.detections.landmarks,
            })
        return outputs

    # ModelScope's stages, as its base ``Pipeline._process_single`` drives them (also what ``Pipeline.__call__``
    # does for one input): preprocess -> collate (numpy -> torch on the pipeline's device) -> forward -> postprocess.
    # The result equals ``self(input)``. (ModelScope's ``_process_batch`` slices one row per input, which cannot hold
    # a variable number of faces: lists go through ``self(list)``.)
    def preprocess(self, input: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """One image -> ``{'img': crops, 'boxes', 'scores', 'keypoints'}`` (per-call ``use_det``/``max_faces``)."""
        options = check_call_options(kwargs)
        if "batch_size" in options:
            raise UnknownOptionError("preprocess takes use_det and max_faces; batch_size belongs to forward")
        return self.preprocessor(input, **options)

    def forward(self, input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Preprocessed (possibly collated to tensors) faces -> the same dict as numpy, plus ``img_embedding``.

        Raises :class:`EmbeddingError` rather than return a non-finite embedding."""
        options = check_call_options(kwargs)
        if set(options) - {"batch_size"}:
            raise UnknownOptionError("forward takes batch_size only; use_det and max_faces belong to preprocess")
        out = {key: _numpy(value) for key, value in input.items()}
        out[OutputKeys.IMG_EMBEDDING] = self.model.embed(out["img"], batch_size=options.get("batch_size"))
        return out

    def postprocess(self, inputs: dict[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
        """The output contract: four float32 arrays, rows aligned."""
        if kwargs:
            raise UnknownOptionError(f"postprocess takes no options, got {sorted(kwargs)}")
        keys = {OutputKeys.IMG_EMBEDDING: OutputKeys.IMG_EMBEDDING, OutputKeys.SCORES: "scores",
                OutputKeys.BOXES: "boxes", OutputKeys.KEYPOINTS: "keypoints"}
        return {key: np.asarray(_numpy(inputs[source]), np.float32) for key, source in keys.items()}


def _check_same_precision(requested: str | None, actual: str, what: str) -> None:
    """A ``precision`` keyword must agree with a given model/preprocessor (weights are cast once, when built)."""
    if requested is not None and requested != actual:
        raise ConfigurationError(f"precision={requested!r} but the given {what} runs in {actual!r} (weights are cast "
                                 f"once, when built): build the {what} with precision={requested!r}, or omit precision")


def _check_same_engine(requested: str | None, actual: str, what: str) -> None:
    """An ``engine`` keyword must agree with a given model/preprocessor (the engine is set up when it is built)."""
    if requested is not None and requested != actual:
        raise ConfigurationError(f"engine={requested!r} but the given {what} runs on {actual!r}: build the {what} "
                                 f"with engine={requested!r}, or omit engine")


def _int8_note(networks: dict[str, bool]) -> str:
    """`` (int8: recognizer; fp32: detector)`` for the INFO line, or nothing outside int8."""
    if not networks:
        return ""
    int8 = [k for k, v in networks.items() if v] or ["none"]
    fp32 = [k for k, v in networks.items() if not v]
    return f" (int8: {', '.join(int8)}" + (f"; fp32: {', '.join(fp32)})" if fp32 else ")")


def _numpy(value: Any) -> Any:
    """A tensor (ModelScope's collate moves arrays to torch on the pipeline's device) back to numpy."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _modelscope_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords ModelScope passes (kept, quietly); every other one is logged at WARNING and dropped."""
    known = set(PIPELINE_OPTIONS) | {"model", "preprocessor"}
    for name in kwargs:
        if name not in MODELSCOPE_PIPELINE_KEYWORDS:
            logger.warning("%s; it is ignored", unknown_keyword_message(name, known, "FaceMaskPipeline"))
    return {k: v for k, v in kwargs.items() if k in MODELSCOPE_PIPELINE_KEYWORDS}


override_builtin_pipeline(FaceMaskPipeline)  # the built-in name builds ours wherever this class exists
