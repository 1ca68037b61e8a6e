"""What ``bench.py`` measures with: FLOP/s peaks (GEMM probes, GPU spec sheets), memory, timing, FLOP counts, fidelity
against the reference's outputs, the time budget and progress lines, and the weights load in child processes."""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from modelscope_facemask.engines.precision import cpu_has_bf16

#: NVIDIA spec sheets, dense (no sparsity), TFLOP/s: fp32 (CUDA cores), tf32/bf16/fp16 (tensor cores)
GPU_PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5
}


# ---------------------------------------------------------------------- FLOP/s peaks
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


def int8_gemm_probe(*, n: int = 2048, repeats: int = 10) -> dict[str, Any]:
    """int8 x int8 -> int32 n x n matmul rate on the CPU (``torch._int_mm``, oneDNN: VNNI / AMX where the CPU has
    them), GOP/s; the peak the int8 modes are compared with."""
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    for _ in range(3):
        torch._int_mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch._int_mm(a, b)
        times.append(time.perf_counter() - start)
    op = 2.0 * n ** 3
    return {"n": n, "dtype": "int8 -> int32 (torch._int_mm)", "threads": torch.get_num_threads(),
            "median_gops": op / statistics.median(times) / 1e9, "best_gops": op / min(times) / 1e9}


def probe_peaks(device: torch.device, gpu_name: str | None, smoke: bool) -> dict[str, Any]:
    """The run's peaks: the CPU fp32 GEMM probe (and bf16 where the CPU has bf16 hardware, on a CPU run); on CUDA
    the GPU fp32 GEMM probe and the spec sheet of ``gpu_name``."""
    peaks: dict[str, Any] = {"cpu_gemm": gemm_probe(torch.device("cpu"), repeats=3 if smoke else 10)}
    peaks["cpu_gemm_gflops"] = peaks["cpu_gemm"]["median_gflops"]
    if device.type == "cpu":
        peaks["cpu_gemm_int8"] = int8_gemm_probe(repeats=3 if smoke else 10)
        peaks["cpu_gemm_int8_gops"] = peaks["cpu_gemm_int8"]["median_gops"]
    if device.type == "cpu" and cpu_has_bf16():
        peaks["cpu_gemm_bf16"] = gemm_probe(torch.device("cpu"), repeats=3 if smoke else 10, dtype=torch.bfloat16)
        peaks["cpu_gemm_bf16_gflops"] = peaks["cpu_gemm_bf16"]["median_gflops"]
    if device.type == "cuda":
        peaks["gpu_gemm_fp32"] = gemm_probe(device)
        name, spec = gpu_peaks(gpu_name or "")
        peaks.update(gpu_spec_name=name, gpu_spec_tflops=spec)
    return peaks


def peak_for(device: torch.device, precision: str, peaks: dict[str, Any]) -> tuple[float | None, str]:
    """The FLOP/s peak a mode is compared with, and its origin."""
    if device.type == "cpu":
        if precision == "bf16" and "cpu_gemm_bf16_gflops" in peaks:
            return peaks["cpu_gemm_bf16_gflops"] * 1e9, "bf16 GEMM probe, same run"
        if precision == "int8" and "cpu_gemm_int8_gops" in peaks:
            return peaks["cpu_gemm_int8_gops"] * 1e9, "int8 GEMM probe (torch._int_mm), same run"
        return peaks["cpu_gemm_gflops"] * 1e9, "fp32 GEMM probe, same run"
    spec = peaks.get("gpu_spec_tflops")
    if not spec:
        return None, "unknown GPU: no spec-sheet peak"
    key = {"fp32": "tf32", "fp16": "fp16", "bf16": "bf16"}[precision]
    return spec[key] * 1e12, f"spec sheet {peaks['gpu_spec_name']} {key} dense"


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of ``fn()`` counted by torch's FlopCounterMode (torch ops only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


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


# ---------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values``."""
    return float(np.percentile(np.asarray(values, np.float64), q))


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds of ``fn()``, GPU synchronised before and after; its result)."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def rate(count: int, seconds: float) -> float:
    """``count`` per second (infinite for no time)."""
    return count / seconds if seconds > 0 else float("inf")


_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr with the seconds since start."""
    print(f"[bench {time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


class Budget:
    """Wall-clock budget: ``left()`` seconds remain; steps that do not fit are recorded as skipped."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (infinite without a budget)."""
        return float("inf") if self.end is None else self.end - time.monotonic()


# ---------------------------------------------------------------------- fidelity
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
print(json.dumps({'seconds': seconds, 'rss_before': before, 'peak_rss': peak[0],
                  'file_bytes': os.path.getsize(weights)}))
"""


def measure_load(model: Path, threads: int, repeats: int = 2) -> dict[str, Any]:
    """Load the recognizer folder in fresh processes (the file was just written: warm page cache); best of
    ``repeats``. Peak RSS growth while loading is compared with the weights file's size."""
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
