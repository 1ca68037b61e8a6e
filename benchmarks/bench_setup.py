"""What ``bench.py`` builds before it measures: the weights folders, the input images, ModelScope's reference flow
(its own classes) and our pipeline as a user builds it."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

SMALL_UNITS = (1, 2, 2, 1)


# ---------------------------------------------------------------------- weights and images
def build_folders(root: Path, smoke: bool) -> tuple[Path, Path, Path]:
    """Write the recognizer (full 124 M net, or the small one) and a RetinaFace-R50 detector folder; returns (our
    model folder, the reference's model folder, detector folder). Full size: one folder with the official card;
    smoke: ours carries ``model.backbone.units`` (which ModelScope's built-in cannot read), the reference gets the
    same weights file under the official card."""
    from modelscope_facemask.nets.retinaface import RESNET50_CONFIG
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer, synthetic_retinaface
    from modelscope_facemask.tools.hub.repository_writers import (
        OFFICIAL_MINIMAL_CONFIGURATION, facemask_configuration, write_detector_repo, write_facemask_repo)

    detector_state = synthetic_retinaface(RESNET50_CONFIG, class_head_std=0.05).state_dict()
    detector = write_detector_repo(root / "detector", detector_state, RESNET50_CONFIG)
    if not smoke:
        model = write_facemask_repo(root / "facemask", synthetic_recognizer().state_dict(),
                                    OFFICIAL_MINIMAL_CONFIGURATION)
        return model, model, detector
    state = synthetic_recognizer(SMALL_UNITS).state_dict()
    ours = write_facemask_repo(root / "facemask", state, facemask_configuration(detector="detector", units=SMALL_UNITS))
    shutil.copytree(detector, ours / "detector")
    return ours, write_facemask_repo(root / "reference", state, OFFICIAL_MINIMAL_CONFIGURATION), detector


def head_square(image: np.ndarray, scale: float, dx: float) -> np.ndarray:
    """A square around a portrait's head: side ``scale`` x the shorter side, centred at 45 % of the height."""
    h, w = image.shape[:2]
    side = max(16, int(min(h, w) * scale))
    cx, cy = w / 2 + dx * side, h * 0.45
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def photo_set(folder: Path, portraits: dict[str, Path], smoke: bool) -> list[str]:
    """Set ``photos``: the portraits and a group photo composed from three of them (smoke: two portraits shrunk to
    160 px)."""
    import cv2

    from modelscope_facemask.tools.demo import GROUP_MEMBERS, compose_group

    names = sorted(portraits)
    if smoke:
        small = []
        for name in names[:2]:
            image = cv2.imread(str(portraits[name]))
            factor = 160 / max(image.shape[:2])
            path = folder / f"{name}_small.png"
            cv2.imwrite(str(path), cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))
            small.append(str(path))
        return small
    group = compose_group([cv2.imread(str(portraits[n]))[:, :, ::-1] for n in GROUP_MEMBERS])
    group_path = folder / "group.png"
    cv2.imwrite(str(group_path), np.ascontiguousarray(group[:, :, ::-1]))
    return [str(portraits[n]) for n in names] + [str(group_path)]


def jpeg_set(folder: Path, portraits: dict[str, Path], count: int, smoke: bool) -> list[str]:
    """Set ``jpeg640``: ``count`` square single-face JPEGs (640 px, smoke 160 px) cut deterministically from the
    portraits (each portrait once, then seeded random crops), JPEG quality 95."""
    import cv2

    names = sorted(portraits)
    size = 160 if smoke else 640
    rng = np.random.Generator(np.random.PCG64(0))
    jpegs = []
    for i in range(count):
        image = cv2.imread(str(portraits[names[i % len(names)]]))
        scale, dx = (1.0, 0.0) if i < len(names) else (float(rng.uniform(0.75, 1.0)), float(rng.uniform(-0.08, 0.08)))
        square = cv2.resize(head_square(image, scale, dx), (size, size), interpolation=cv2.INTER_AREA)
        path = folder / f"face{size}_{i:04d}.jpg"
        cv2.imwrite(str(path), square, [cv2.IMWRITE_JPEG_QUALITY, 95])
        jpegs.append(str(path))
    return jpegs


def make_inputs(folder: Path, count_640: int, smoke: bool) -> dict[str, list[str]]:
    """The input sets as file paths: ``photos`` (portraits + group) and ``jpeg640`` (``count_640`` JPEGs)."""
    from modelscope_facemask.model_files.assets import portrait_photos

    folder.mkdir(parents=True, exist_ok=True)
    portraits = portrait_photos()
    return {"photos": photo_set(folder, portraits, smoke), "jpeg640": jpeg_set(folder, portraits, count_640, smoke)}


# ---------------------------------------------------------------------- the reference (ModelScope's own classes)
def small_reference_iresnet(units: Sequence[int]) -> torch.nn.Module:
    """ModelScope's IResNet with its body rebuilt from ModelScope's BottleneckIR for ``units`` (smoke only)."""
    from modelscope.models.cv.face_recognition.torchkit.backbone import facemask_backbone as ref_backbone

    net = ref_backbone.iresnet286()
    blocks, in_channel = [], 64
    for depth, count in zip((64, 128, 256, 512), units):
        blocks += ref_backbone.get_block(in_channel, depth, count)
        in_channel = depth
    net.body = torch.nn.Sequential(*[ref_backbone.BottleneckIR(b.in_channel, b.depth, b.stride) for b in blocks])
    return net


def reference_pipeline(model: Path, detector: Path, device: torch.device, smoke: bool) -> Any:
    """ModelScope's built-in FaceMask pipeline with ModelScope's RetinaFace pipeline as its detector."""
    from modelscope.pipelines.cv import mask_face_recognition_pipeline as builtin
    from modelscope.pipelines.cv.retina_face_detection_pipeline import RetinaFaceDetectionPipeline

    name = "cuda" if device.type == "cuda" else "cpu"
    original = builtin.iresnet286
    if smoke:  # the built-in hard-codes iresnet286: give it ModelScope's own blocks at the small depth
        builtin.iresnet286 = lambda: small_reference_iresnet(SMALL_UNITS)
    try:
        ref = builtin.MaskFaceRecognitionPipeline(model=str(model), use_det=False, device=name)
    finally:
        builtin.iresnet286 = original
    ref.use_det = True
    ref.face_detection = RetinaFaceDetectionPipeline(model=str(detector), device=name)
    return ref


class RecordingReference:
    """Calls the reference on one path and keeps the face its ``preprocess`` chose (score, box, landmarks)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.chosen: dict[str, Any] = {}
        builtin_preprocess = type(ref).preprocess

        def recording_preprocess(input: Any, **kwargs: Any) -> Any:
            result = builtin_preprocess(ref, input, **kwargs)
            self.chosen = {"box": np.array(result["bbox"], np.float64).reshape(-1),
                           "keypoints": np.array(result["lmks"], np.float64).reshape(-1)}
            return result

        ref.preprocess = recording_preprocess

    def __call__(self, path: str) -> dict[str, Any]:
        from modelscope.outputs import OutputKeys

        self.chosen = {}
        emb = self.ref(path)[OutputKeys.IMG_EMBEDDING]
        return {"embedding": None if emb is None else np.asarray(emb, np.float32).reshape(-1), **self.chosen}


def reference_recognizer_embed(ref: Any, crops_rgb: np.ndarray) -> np.ndarray:
    """The built-in's recognizer, batch 1, line for line its ``preprocess`` tail + ``forward``, on aligned crops."""
    rows = []
    for crop in crops_rgb:
        align_img = crop[:, :, ::-1]  # the built-in holds BGR crops
        face_img = align_img[:, :, ::-1]
        face_img = np.transpose(face_img, axes=(2, 0, 1))
        face_img = ((face_img / 255.0 - 0.5) / 0.5).astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(face_img)).to(ref.device)
        rows.append(ref.forward({"img": tensor})["img_embedding"])
    return np.concatenate(rows).astype(np.float32)


def quantize_folder(out: Path, model: Path, detector: Path, images: Sequence[str]) -> dict[str, Any]:
    """``facemask quantize`` (the tool, default settings: detector kept in fp32) of ``model`` with ``detector``,
    calibrated on ``images`` but the last, which is held out, one face per image (the synthetic R50 finds hundreds
    of meaningless ones); its seconds and where it went."""
    import time

    from modelscope_facemask.tools.quantize.build import QuantizeRequest, quantize_model
    from modelscope_facemask.tools.quantize.calibration import split_calibration

    split = split_calibration([Path(p) for p in images], held_out=1)
    start = time.perf_counter()
    result = quantize_model(QuantizeRequest(str(model), str(detector), split, out, max_faces=1))
    return {"folder": out, "seconds": time.perf_counter() - start, "calibration_images": len(split.calibration),
            "int8_networks": result["manifest"]["int8_networks"]}


# ---------------------------------------------------------------------- ours
def pipeline_keywords() -> set[str]:
    """The keywords our pipeline's constructor accepts."""
    from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline

    return set(inspect.signature(FaceMaskPipeline.__init__).parameters)


def build_ours(model: Path, detector: Path, device: torch.device, *, loaded: Any = None, **options: Any) -> Any:
    """Our registered pipeline as a user builds it; ``options`` checked against the pipeline's keywords first."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    missing = sorted(set(options) - pipeline_keywords())
    if missing:
        raise NotImplementedError(f"the pipeline has no keyword {', '.join(missing)} in this version")
    pipe = pipeline(Tasks.face_recognition, loaded if loaded is not None else str(model),
                    detector_model=str(detector), device=device.type, **options)
    for key, value in options.items():  # a keyword that is accepted but not honoured is no mode
        actual = getattr(pipe, key, getattr(pipe.model, key, value))
        if key == "precision" and isinstance(actual, str) and value not in actual:
            raise NotImplementedError(f"asked precision={value}, the pipeline runs {actual}")
        if key == "engine" and actual != value:
            raise NotImplementedError(f"asked engine={value}, the pipeline runs {actual}")
    return pipe
