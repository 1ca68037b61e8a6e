"""The result of ``bench.py``: the JSON report's header (machine, versions, weights, settings, notes), the issue-8
targets judged against what was measured, where the JSON goes and the targets table printed at the end. The README's
tables are made from this JSON by ``readme_table.py``."""
from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

HERE = Path(__file__).resolve().parent
TARGETS = {  # issue 8, item 5
    "cpu_exact_speedup": ("cpu", ">=", 2.5, "exact mode end to end vs the reference flow (photos), x"),
    "cpu_exact_max_abs_embedding_diff": ("cpu", "<=", 1e-4,
                                         "exact mode: max abs embedding difference vs the reference"),
    "cpu_recognizer_fraction_of_gemm": ("cpu", ">=", 0.9, "recognizer GFLOP/s / fp32 GEMM GFLOP/s (same run)"),
    "cpu_det640_speedup": ("cpu", ">=", 4.0, "det_max_side=640 end to end vs the reference flow (photos), x"),
    "gpu_recognizer_fp16_faces_per_s": ("cuda", ">=", 8000.0, "recognizer fp16 faces/s (cosine >= 0.9999 vs fp32)"),
    "gpu_recognizer_fp16_min_cosine": ("cuda", ">=", 0.9999, "recognizer fp16 min cosine vs the fp32 reference"),
    "gpu_jpeg640_images_per_s": ("cuda", ">=", 2000.0, "640x640 single-face JPEGs end to end, images/s (best mode)"),
    "gpu_batch1_latency_ms": ("cuda", "<=", 10.0, "batch-1 end-to-end latency p50 on 640x640 JPEGs, ms (best mode)"),
    "load_seconds": ("any", "<=", 1.5, "full recognizer weights load, warm disk, s"),
    "load_peak_rss_over_file": ("any", "<=", 1.3, "peak RSS growth while loading / file size"),
    # issue 17 (int8): speed targets apply on VNNI CPUs; fidelity on the real mobilenet0.25 + portraits
    "cpu_int8_recognizer_speedup_vs_fp32_openvino": ("cpu", ">=", 2.0,
                                                     "int8 recognizer faces/s / fp32 OpenVINO recognizer (VNNI CPU), x"),
    "cpu_int8_det640_speedup": ("cpu", ">=", 8.0, "int8 end to end, det_max_side=640, vs the reference flow (photos), x"),
    "cpu_int8_recognizer_min_cosine": ("cpu", ">=", 0.999,
                                       "int8 recognizer min cosine vs fp32, identical crops (fidelity pass)"),
    "cpu_int8_end_to_end_min_cosine": ("cpu", ">=", 0.995, "int8 end to end min cosine vs fp32, matched faces "
                                                            "(fidelity pass)"),
    "cpu_int8_faces_lost": ("cpu", "<=", 0.0, "int8 end to end: faces lost vs fp32 (fidelity pass)"),
}
NOTES = [
    "images/s and faces/s: ours from list calls (median pass), the reference one image at a time",
    "latency: single-image calls, all stages, wall clock (GPU synchronised)",
    "peak RSS is process-wide (both flows' models are resident)",
    "FLOPs counted with torch.utils.flop_counter.FlopCounterMode on our torch pipeline; other "
    "engines are credited the same FLOPs; int8 modes are compared with the int8 GEMM probe (torch._int_mm)",
    "speed pass: the synthetic R50 detector's detections are meaningless (box regressions exponentiate "
    "noise, boxes reach 1e20 px), so its fidelity figures (kept in the JSON for parity checks) are not printed",
    "fidelity: the 'fidelity' block, the real mobilenet0.25 detector on the real portraits, every mode against "
    "torch fp32 (bench_fidelity.py); the recognizer weights are synthetic, so the figures do not transfer to "
    "trained weights; the int8 folder is calibrated on crops of the same portraits (optimistic)",
]


# ---------------------------------------------------------------------- machine description
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_int8_hardware() -> dict[str, bool]:
    """The int8 / bf16 instruction sets /proc/cpuinfo advertises (int8 pays on VNNI and AMX)."""
    with contextlib.suppress(OSError):
        flags = set(Path("/proc/cpuinfo").read_text().split())
        return {f: f in flags for f in ("avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")}
    return {}


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_device(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads and (on CUDA) the GPU."""
    out: dict[str, Any] = {"type": device.type, "cpu": cpu_model(), "cores": os.cpu_count(),
                           "cores_usable": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                           "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_sms=props.multi_processor_count, gpu_capability=f"{props.major}.{props.minor}",
                   cuda=torch.version.cuda)
    return out


def versions() -> dict[str, str]:
    """Versions of what the benchmark runs on."""
    from modelscope_facemask.version import __version__

    names = ("torch", "modelscope", "onnxruntime", "openvino", "nncf", "numpy", "opencv-python-headless", "opencv-python",
             "scikit-image", "torchvision")
    return {"python": platform.python_version(), "modelscope-facemask": __version__,
            **{name: package_version(name) for name in names}}


# ---------------------------------------------------------------------- the report
def report_header(device: torch.device, smoke: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """The report before anything is measured: what ran, when, on what, with which weights and settings (empty
    ``modes`` and ``skipped`` to fill)."""
    return {
        "benchmark": "benchmarks/bench.py" + (" --smoke" if smoke else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "versions": versions(), "load_average_start": list(os.getloadavg()),
        "weights": ("smoke: small IResNet units 1/2/2/1 + RetinaFace-R50" if smoke else
                    "full IResNet 6/21/66/6 (124 M params) + RetinaFace-R50") + ", deterministic synthetic calibrated"
                   + "; fidelity pass: the same recognizer + the real mobilenet0.25",
        "cpu_int8_hardware": cpu_int8_hardware(),
        "settings": settings, "notes": list(NOTES), "modes": {}, "skipped": {},
    }


def without_outputs(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference's results per set as reported (the kept outputs left out)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "_outputs"} for k, v in reference.items()}


def _best(values: list[tuple[float, str]], larger: bool) -> tuple[float | None, str | None]:
    """The largest (or smallest) measured (value, where) pair, ignoring values not measured."""
    values = [v for v in values if v[0] is not None]
    if not values:
        return None, None
    return (max if larger else min)(values)


def measured_values(report: dict[str, Any]) -> dict[str, tuple[Any, str | None]]:
    """Each target's measured value and where it comes from (the best mode where several apply)."""
    modes = report["modes"]

    def set_values(names: Sequence[str], set_name: str, key: str) -> list[tuple[float, str]]:
        return [(modes[m]["sets"][set_name].get(key), m) for m in names
                if modes.get(m, {}).get("available") and key in modes[m]["sets"].get(set_name, {})]

    exact = [m for m in modes if m.startswith("fp32-")]
    measured: dict[str, tuple[Any, str | None]] = {
        "cpu_exact_speedup": _best(set_values(exact, "photos", "speedup_vs_reference"), True),
        "cpu_det640_speedup": _best(set_values([m for m in modes if m.startswith("det640")], "photos",
                                               "speedup_vs_reference"), True),
        "gpu_jpeg640_images_per_s": _best(set_values(list(modes), "jpeg640", "images_per_s"), True),
        "gpu_batch1_latency_ms": _best(set_values(list(modes), "jpeg640", "latency_ms_p50"), False),
        "load_seconds": (report["load"]["model"]["seconds"], "load.model"),
        "load_peak_rss_over_file": (report["load"]["model"]["peak_rss_over_file"], "load.model"),
    }
    best_exact = measured["cpu_exact_speedup"][1]
    if best_exact:
        measured["cpu_exact_max_abs_embedding_diff"] = (modes[best_exact]["sets"]["photos"]["max_abs_embedding_diff"],
                                                        best_exact)
    runs = modes.get("recognizer", {}).get("runs", {})
    measured["cpu_recognizer_fraction_of_gemm"] = _best(
        [(r.get("fraction_of_cpu_gemm"), f"recognizer.{n}") for n, r in runs.items()
         if r.get("available") and n.startswith("fp32-")], True)
    int8 = runs.get("int8-openvino", {})
    fp32_ov = runs.get("fp32-openvino", {})
    if int8.get("available") and "failed" not in int8 and fp32_ov.get("available") and "failed" not in fp32_ov:
        measured["cpu_int8_recognizer_speedup_vs_fp32_openvino"] = (int8["faces_per_s"] / fp32_ov["faces_per_s"],
                                                                    "recognizer.int8-openvino / fp32-openvino")
    measured["cpu_int8_det640_speedup"] = _best(set_values(["int8-det640-openvino"], "photos",
                                                           "speedup_vs_reference"), True)
    fid = report.get("fidelity", {}).get("modes", {}).get("int8-openvino", {})
    if fid.get("available"):
        measured["cpu_int8_recognizer_min_cosine"] = (fid["recognizer_identical_crops_min_cosine"],
                                                      "fidelity.int8-openvino")
        measured["cpu_int8_end_to_end_min_cosine"] = (fid["min_cosine"], "fidelity.int8-openvino")
        measured["cpu_int8_faces_lost"] = (fid["lost"], "fidelity.int8-openvino")
    fp16 = runs.get("fp16", {})
    if fp16.get("available") and "failed" not in fp16:
        measured["gpu_recognizer_fp16_faces_per_s"] = (fp16["faces_per_s"], "recognizer.fp16")
        measured["gpu_recognizer_fp16_min_cosine"] = (fp16["min_cosine_vs_reference"], "recognizer.fp16")
    return measured


def targets(report: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Each issue-8 target: required, measured (and where from), met true/false (None: not measured here)."""
    measured = measured_values(report)
    out = {}
    for key, (where, op, required, what) in TARGETS.items():
        value, source = measured.get(key, (None, None))
        applies = where in ("any", device.type)
        met = None if value is None or not applies else (value >= required if op == ">=" else value <= required)
        out[key] = {"what": what, "required": f"{op} {required:g}", "measured": value, "from": source,
                    "met": met, **({} if applies else {"note": f"target for {where}; this run is on {device.type}"})}
    return out


def default_out(device: torch.device, smoke: bool) -> Path:
    """The JSON's default path: a temp file for a smoke run, else benchmarks/results/cpu-DATE.json or
    gpu-NAME-DATE.json."""
    day = datetime.date.today().isoformat()
    if smoke:
        return Path(tempfile.gettempdir()) / f"facemask-bench-smoke-{day}.json"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip().split()[0]
        return HERE / "results" / f"gpu-{name}-{day}.json"
    return HERE / "results" / f"cpu-{day}.json"


def print_targets(report: dict[str, Any]) -> None:
    """One line per target: required, measured, met."""
    for key, target in report["targets"].items():
        print(f"  {key}: required {target['required']}, measured {target['measured']}, met {target['met']}")
