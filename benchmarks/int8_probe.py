"""int8 on this CPU, network by network (issue 17): the full 124 M recognizer (deterministic SYNTHETIC weights) int8
vs fp32 on OpenVINO, speed and cosine on identical crops of the real portraits; and the detector decision (int8 vs
fp32): the real mobilenet0.25's landmark deviation end to end and its speed, and the synthetic RetinaFace-R50's
speed at 640x640 (its detections mean nothing; only its time is used).

Calibration: 4 of the 6 portraits, the other 2 held out (``facemask quantize``'s default split with --held-out 2);
cosines are reported on the held-out crops and on all crops. Figures from synthetic weights do not transfer to
trained weights: read ``facemask quantize``'s report on your own.

    python benchmarks/int8_probe.py --out benchmarks/results/int8-cpu-DATE.json     # ~5 min on 2 cores
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_flags() -> dict[str, bool]:
    """The int8/bf16 instruction sets the CPU advertises."""
    flags = set(Path("/proc/cpuinfo").read_text().split())
    return {name: name in flags for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                               "amx_int8", "amx_bf16")}


def build_model(root: Path, units: Sequence[int] | None) -> Path:
    """A model folder with the synthetic recognizer (full size unless ``units``) and the real mobilenet0.25 inside."""
    from modelscope_facemask.model_files.assets import retinaface_mobilenet_state_dict
    from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer
    from modelscope_facemask.tools.hub.repository_writers import (facemask_configuration, write_detector_repo,
                                                                   write_facemask_repo)

    net = synthetic_recognizer() if units is None else synthetic_recognizer(tuple(units))
    config = facemask_configuration(detector="detector", units=tuple(units or (6, 21, 66, 6)))
    folder = write_facemask_repo(root, net.state_dict(), config)
    write_detector_repo(folder / "detector", retinaface_mobilenet_state_dict(), MOBILENET025_CONFIG)
    return folder


def quantize(model: Path, out: Path, portraits: list[Path], detector: str) -> dict[str, Any]:
    """``facemask quantize`` (the tool) with two portraits held out."""
    from modelscope_facemask.tools.quantize.build import QuantizeRequest, quantize_model
    from modelscope_facemask.tools.quantize.calibration import split_calibration

    split = split_calibration(portraits, held_out=2)
    start = time.perf_counter()
    result = quantize_model(QuantizeRequest(str(model), None, split, out, detector=detector))
    result["seconds"] = time.perf_counter() - start
    return result


def recognizer_probe(model: Path, folder: Path, portraits: list[Path], held_out: list[str], batch: int,
                     faces: int, repeats: int) -> dict[str, Any]:
    """Full recognizer: OpenVINO fp32 vs int8 (and torch fp32 as the reference) on identical crops."""
    from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline

    torch_pipe = FaceMaskPipeline(str(model), device="cpu", max_faces=None)
    prepared = torch_pipe.preprocessor.prepare([str(p) for p in portraits], max_faces=None)
    names = [p.name for p, prep in zip(portraits, prepared) for _ in range(len(prep))]
    crops = np.concatenate([p.crops for p in prepared])
    fp32_ov = FaceMaskPipeline(str(model), device="cpu", engine="openvino", max_faces=None)
    int8 = FaceMaskPipeline(str(model), device="cpu", precision="int8", engine="openvino", engine_dir=str(folder),
                            max_faces=None)
    reference = torch_pipe.model.embed(crops).astype(np.float64)
    out: dict[str, Any] = {"faces": len(crops), "batch": batch, "timed_faces": faces}
    timed = np.ascontiguousarray(np.resize(crops, (faces, *crops.shape[1:])))
    for name, pipe in (("fp32-openvino", fp32_ov), ("int8-openvino", int8)):
        got = pipe.model.embed(crops).astype(np.float64)
        cos = np.sum(got * reference, axis=1)
        held = np.array([n in held_out for n in names])
        seconds = median_seconds(lambda: pipe.model.embed(timed, batch_size=batch), repeats)
        single = median_seconds(lambda: pipe.model.embed(timed[:1], batch_size=1), repeats * 3)
        out[name] = {"faces_per_s": faces / seconds, "batch1_ms": 1e3 * single,
                     "min_cosine_vs_torch_fp32_all_crops": float(cos.min()),
                     "min_cosine_vs_torch_fp32_held_out_crops": float(cos[held].min()) if held.any() else None,
                     "median_cosine_vs_torch_fp32_all_crops": float(np.median(cos))}
    out["int8_speedup_vs_fp32_openvino"] = out["int8-openvino"]["faces_per_s"] / out["fp32-openvino"]["faces_per_s"]
    return out


def detector_speed(xml_fp32: Path, xml_int8: Path, planes: np.ndarray, repeats: int) -> dict[str, Any]:
    """Seconds per image of two detector graphs on the same network input."""
    from modelscope_facemask.engines.openvino_engine import OpenVinoEngine

    fp32, int8 = OpenVinoEngine(xml_fp32), OpenVinoEngine(xml_int8, precision="int8")
    t32 = median_seconds(lambda: fp32(planes), repeats)
    t8 = median_seconds(lambda: int8(planes), repeats)
    return {"input": list(planes.shape), "fp32_ms": 1e3 * t32, "int8_ms": 1e3 * t8, "int8_speedup": t32 / t8}


def detector_probe(root: Path, small_model: Path, portraits: list[Path], repeats: int) -> dict[str, Any]:
    """The detector decision: mobilenet0.25 int8 (landmarks end to end on held-out portraits, speed) and the
    synthetic R50's int8 speed at 640x640."""
    import cv2

    from modelscope_facemask.engines.export import export_network
    from modelscope_facemask.engines.quantize import quantize_openvino
    from modelscope_facemask.faces.detector import DetectionSettings, network_planes
    from modelscope_facemask.nets.retinaface import RESNET50_CONFIG
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_retinaface

    with_int8 = quantize(small_model, root / "small-int8-detector", portraits, "int8")
    with_fp32 = quantize(small_model, root / "small-fp32-detector", portraits, "fp32")
    image = cv2.imread(str(portraits[0]))[:, :, ::-1]
    planes = network_planes(np.ascontiguousarray(image), DetectionSettings(), "BGR")[0][None]
    out = {"mobilenet0.25 (real weights), detector int8": with_int8["report"]["end_to_end"],
           "mobilenet0.25 (real weights), detector fp32": with_fp32["report"]["end_to_end"],
           "mobilenet0.25 speed": detector_speed(root / "small-fp32-detector" / "detector.xml",
                                                 root / "small-int8-detector" / "detector.xml", planes, repeats)}
    r50 = synthetic_retinaface(RESNET50_CONFIG, class_head_std=0.05).eval()
    (root / "r50").mkdir()
    export_network(r50, "detector", "openvino", root / "r50")
    square = cv2.resize(np.ascontiguousarray(image), (640, 640), interpolation=cv2.INTER_AREA)
    calib = [network_planes(cv2.resize(cv2.imread(str(p))[:, :, ::-1], (640, 640)), DetectionSettings(), "RGB")[0][None]
             for p in portraits[:4]]
    quantize_openvino(root / "r50" / "detector.xml", calib, root / "r50" / "detector-int8.xml")
    out["RetinaFace-R50 (synthetic weights) speed at 640x640"] = detector_speed(
        root / "r50" / "detector.xml", root / "r50" / "detector-int8.xml",
        network_planes(square, DetectionSettings(), "RGB")[0][None], repeats)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench_report import cpu_model, versions

    from modelscope_facemask.model_files.assets import portrait_photos

    portraits = sorted(portrait_photos().values())
    report: dict[str, Any] = {
        "benchmark": "benchmarks/int8_probe.py", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "cpu": cpu_model(), "cpu_flags": cpu_flags(), "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "notes": ["recognizer weights: deterministic SYNTHETIC (untrained) full IResNet 6/21/66/6, 124 M params; "
                  "figures from synthetic weights do not transfer: read facemask quantize's report of your weights",
                  "the machine's 2 cores are shared with another worker's jobs: absolute speeds are noisy, ratios "
                  "less so", "calibration: 4 portraits, 2 held out (facemask quantize --held-out 2)"]}
    with tempfile.TemporaryDirectory(prefix="facemask-int8-") as tmp:
        root = Path(tmp)
        full = build_model(root / "full", None if not args.smoke else (1, 2, 2, 1))
        result = quantize(full, root / "full-int8", portraits, "fp32")
        report["quantize_full"] = {"seconds": result["seconds"], "report": result["report"]}
        report["recognizer"] = recognizer_probe(full, root / "full-int8", portraits,
                                                result["report"]["held_out_images"], args.batch, args.faces,
                                                args.repeats)
        small = build_model(root / "small", (1, 2, 2, 1))
        report["detector"] = detector_probe(root, small, portraits, args.repeats)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="small recognizer (seconds)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from modelscope_facemask.support.json_output import write_json

    report = run(args)
    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("recognizer", "detector")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
