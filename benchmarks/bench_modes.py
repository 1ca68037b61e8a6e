"""The modes of ``bench.py``: what each one builds and runs. The reference flow on each input set, each end-to-end
mode of our pipeline on each set (speed, fidelity, FLOP/s), and the recognizer-only batches."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench_measure import (Budget, count_flops, fidelity, measured_memory, peak_for, percentile, progress, rate,
                           timed)
from bench_setup import RecordingReference, build_ours, reference_recognizer_embed

ENGINES = ("torch", "onnxruntime", "openvino")
CUDA_MODES = ("fp32-torch", "fp16", "bf16", "det640", "recognizer")
#: int8 (a CPU feature: VNNI / AMX), from a ``facemask quantize`` folder the run makes
INT8_MODES = ("int8-openvino", "int8-det640-openvino")
SPENT = "time budget (--max-seconds) spent"


@dataclass
class Context:
    """What every mode shares: the folders, the device, the input sets, the run's settings, peaks and time budget."""

    model: Path
    detector: Path
    device: torch.device
    sets: dict[str, list[str]]
    settings: dict[str, Any]
    peaks: dict[str, Any]
    budget: Budget
    smoke: bool
    #: the ``facemask quantize`` folder the int8 modes of the speed pass run (None: no int8 mode asked for)
    int8_dir: Path | None = None


# ---------------------------------------------------------------------- which modes
def device_modes(device: torch.device, bf16_hardware: bool) -> list[str]:
    """CPU: fp32 on each engine, det640 (torch and OpenVINO), bf16 (torch, OpenVINO) and bf16-det640-openvino
    where ``bf16_hardware``, recognizer; CUDA: fp32 (torch), fp16, bf16, det640, recognizer (the onnxruntime and
    OpenVINO engines are CPU engines)."""
    if device.type == "cuda":
        return list(CUDA_MODES)
    bf16 = ["bf16", "bf16-openvino", "bf16-det640-openvino"] if bf16_hardware else []  # AMX / avx512_bf16 only
    return [f"fp32-{engine}" for engine in ENGINES] + ["det640", "det640-openvino", *bf16, *INT8_MODES,
                                                       "recognizer"]


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
    if mode in INT8_MODES:
        return {"precision": "int8", "engine": "openvino", **({"det_max_side": 640} if "det640" in mode else {})}, "int8"
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
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(CUDA_MODES)}")


def with_int8_folder(options: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """``options`` plus ``engine_dir`` for an int8 mode (RuntimeError when the run made no quantize folder)."""
    if options.get("precision") != "int8":
        return options
    if folder is None:
        raise RuntimeError("no facemask quantize folder was made for this run (the int8 modes were not asked for)")
    return {**options, "engine_dir": str(folder)}


def failure(exc: Exception) -> str:
    """An exception as the report states it: type and message, at most 400 characters."""
    return f"{type(exc).__name__}: {exc}"[:400]


# ---------------------------------------------------------------------- the reference flow
def run_reference_set(ref: Any, paths: list[str], device: torch.device, repeats: int) -> dict[str, Any]:
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


def run_reference(ref: Any, ctx: Context) -> dict[str, Any]:
    """The reference on the first ``reference_images_max`` images of each set (outputs kept under ``_outputs``)."""
    limit, repeats = ctx.settings["reference_images_max"], ctx.settings["repeats"]
    return {set_name: run_reference_set(ref, paths[:limit], ctx.device, repeats)
            for set_name, paths in ctx.sets.items()}


# ---------------------------------------------------------------------- end-to-end modes
def ensure_full_crops(ours_output: Sequence[dict[str, Any]]) -> None:
    """Raise when our pipeline reported an error on any input."""
    for out in ours_output:
        if "error" in out:
            raise RuntimeError(f"our pipeline failed on a benchmark input: {out['error']}")


def run_ours_set(pipe: Any, paths: list[str], device: torch.device, repeats: int,
                 latency_images: int) -> dict[str, Any]:
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


class FlopsPerImage:
    """FLOPs per image of a pipeline on a set, counted once per (detector resolution, set)."""

    def __init__(self) -> None:
        self.counted: dict[tuple[str, str], float] = {}

    def __call__(self, key: str, pipe: Callable[[], Any], paths: list[str]) -> float:
        """FLOPs per image of ``pipe()(paths)`` (``pipe`` builds a torch pipeline: only torch ops are counted),
        counted the first time ``key`` meets this set."""
        if (key, paths[0]) not in self.counted:
            counted = pipe()
            self.counted[(key, paths[0])] = count_flops(lambda: counted(paths)) / len(paths)
        return self.counted[(key, paths[0])]


def run_mode_set(mode: str, precision: str, pipe: Any, base: Any, paths: list[str], ref_set: dict[str, Any],
                 ctx: Context, flops: FlopsPerImage) -> dict[str, Any]:
    """One mode on one set: speed, fidelity against the reference's outputs, speed-up and FLOP/s against the peak
    (FLOPs counted on our torch pipeline at the mode's detector resolution)."""
    ours = run_ours_set(pipe, paths, ctx.device, ctx.settings["repeats"], ctx.settings["latency_images"])
    n = ref_set["images"]
    ours.update(fidelity(ours.pop("_outputs")[:n], ref_set["_outputs"]))
    ours["speedup_vs_reference"] = ours["images_per_s"] / ref_set["images_per_s"]
    key = "det640" if "det640" in mode else "full"
    flop_per_image = flops(key, lambda: base if key == "full" else pipe if pipe.engine == "torch" else
                           build_ours(ctx.model, ctx.detector, ctx.device, loaded=base.model, det_max_side=640), paths)
    peak, origin = peak_for(ctx.device, precision, ctx.peaks)
    achieved = flop_per_image * ours["images_per_s"]
    ours.update(gflop_per_image=flop_per_image / 1e9, achieved_gflops=achieved / 1e9,
                percent_of_peak=None if peak is None else 100 * achieved / peak, peak_origin=origin)
    return ours


def run_mode(mode: str, base: Any, reference: dict[str, Any], ctx: Context, flops: FlopsPerImage) -> dict[str, Any]:
    """One end-to-end mode on every set; ``available`` False (with the reason) when the pipeline cannot build it.
    A set that fails or does not fit the budget is recorded as such."""
    options, precision = mode_options(mode)
    try:
        options = with_int8_folder(options, ctx.int8_dir)
        pipe = base if not options else build_ours(
            ctx.model, ctx.detector, ctx.device, loaded=base.model if mode == "det640" else None, **options)
    except Exception as exc:  # an engine or precision this build or machine does not offer
        progress(f"mode {mode} unavailable: {exc}")
        return {"available": False, "reason": failure(exc)}
    result: dict[str, Any] = {"available": True, "options": options, "precision": precision,
                              "runs": str(getattr(pipe, "precision", precision)), "sets": {}}
    for set_name, paths in ctx.sets.items():
        if ctx.budget.left() < 15:
            result["sets"][set_name] = {"skipped": SPENT}
            continue
        try:
            result["sets"][set_name] = run_mode_set(mode, precision, pipe, base, paths, reference[set_name], ctx,
                                                    flops)
        except Exception as exc:  # one failing mode or set must not sink the run
            result["sets"][set_name] = {"failed": failure(exc)}
            progress(f"mode {mode} on {set_name} failed: {exc}")
    return result


def run_modes(modes: Sequence[str], base: Any, reference: dict[str, Any], ctx: Context, report: dict[str, Any],
              checkpoint: Callable[[dict[str, Any]], None]) -> None:
    """Every end-to-end mode into ``report["modes"]`` (or ``report["skipped"]`` when the budget is spent), the
    report checkpointed after each mode that ran."""
    flops = FlopsPerImage()
    for mode in modes:
        if mode == "recognizer":
            continue
        if ctx.budget.left() < 30:
            report["skipped"][mode] = SPENT
            continue
        report["modes"][mode] = run_mode(mode, base, reference, ctx, flops)
        if report["modes"][mode]["available"]:
            progress(f"mode {mode} done")
            checkpoint(report)


# ---------------------------------------------------------------------- recognizer only
def recognizer_crops(base: Any, sets: dict[str, list[str]], faces: int) -> np.ndarray:
    """``faces`` aligned crops of the real photos (one face per image, repeated to fill)."""
    prepared = base.preprocessor.prepare(sets["photos"] + sets["jpeg640"][:6], max_faces=1)
    crops = np.concatenate([p.crops for p in prepared if not isinstance(p, Exception) and len(p.crops)])
    return np.ascontiguousarray(np.resize(crops, (faces, *crops.shape[1:])))


def recognizer_variants(device: torch.device, modes: Sequence[str]) -> list[tuple[str, dict[str, Any], str]]:
    """(name, pipeline keywords, precision) of each recognizer run: fp32 torch, then fp16 and bf16 on CUDA, or
    the other engines (and bf16 where its modes were asked for) on a CPU."""
    variants: list[tuple[str, dict[str, Any], str]] = [("fp32-torch", {}, "fp32")]
    if device.type == "cuda":
        variants += [("fp16", {"precision": "fp16"}, "fp16"), ("bf16", {"precision": "bf16"}, "bf16")]
    else:
        variants += [(f"fp32-{e}", {"engine": e}, "fp32") for e in ENGINES[1:]]
        if "bf16" in modes:
            variants.append(("bf16", {"precision": "bf16"}, "bf16"))
        if "bf16-openvino" in modes:
            variants.append(("bf16-openvino", {"precision": "bf16", "engine": "openvino"}, "bf16"))
        if set(INT8_MODES) & set(modes):
            variants.append(("int8-openvino", {"precision": "int8", "engine": "openvino"}, "int8"))
    return variants


def time_recognizer(pipe: Any, crops: np.ndarray, precision: str, flop_per_face: float, ref_rate: float,
                    reference_embed: np.ndarray, ctx: Context) -> dict[str, Any]:
    """Our recognizer at the run's batch: faces/s (median pass), batch-1 latency, FLOP/s against the peak and
    embeddings against the reference's first ones."""
    embed, batch, faces, device = pipe.model.embed, ctx.settings["recognizer_batch"], len(crops), ctx.device
    ref_count = len(reference_embed)
    embed(crops[: batch * 2], batch_size=batch)  # warm-up
    times = []
    with measured_memory(device) as memory:
        for _ in range(1 if ctx.smoke else 3):
            seconds, got = timed(lambda: embed(crops, batch_size=batch), device)
            times.append(seconds)
        single = [timed(lambda: embed(crops[i : i + 1], batch_size=1), device)[0]
                  for i in range(8 if not ctx.smoke else 2)]
    med = statistics.median(times)
    peak, origin = peak_for(device, precision, ctx.peaks)
    cos = np.sum(got[:ref_count].astype(np.float64) * reference_embed, axis=1)
    achieved = flop_per_face * faces / med
    return {"available": True, "faces_per_s": faces / med, "speedup_vs_reference": faces / med / ref_rate,
            "batch1_latency_ms_p50": 1e3 * percentile(single, 50),
            "achieved_gflops": achieved / 1e9,
            "percent_of_peak": None if peak is None else 100 * achieved / peak, "peak_origin": origin,
            "fraction_of_cpu_gemm": achieved / peak if device.type == "cpu" else None,
            "min_cosine_vs_reference": float(cos.min()),
            "max_abs_embedding_diff": float(np.abs(got[:ref_count] - reference_embed).max()), **memory}


def run_recognizer(ref: Any, base: Any, ctx: Context, modes: Sequence[str]) -> dict[str, Any]:
    """Recognizer only, on aligned crops of the real photos: the reference at batch 1 vs ours at the run's batch
    for each precision (and each engine the pipeline offers)."""
    device, faces = ctx.device, ctx.settings["recognizer_faces"]
    crops = recognizer_crops(base, ctx.sets, faces)
    ref_count = min(faces, 8 if device.type == "cpu" else 64) if not ctx.smoke else 2
    reference_embed = reference_recognizer_embed(ref, crops[:2])  # warm-up
    seconds, reference_embed = timed(lambda: reference_recognizer_embed(ref, crops[:ref_count]), device)
    ref_rate = rate(ref_count, seconds)
    flop_per_face = count_flops(lambda: base.model.embed(crops[:1], batch_size=1))
    out: dict[str, Any] = {"faces": faces, "batch": ctx.settings["recognizer_batch"],
                           "gflop_per_face": flop_per_face / 1e9,
                           "reference": {"faces": ref_count, "batch": 1, "faces_per_s": ref_rate}, "runs": {}}
    for name, options, precision in recognizer_variants(device, modes):
        if ctx.budget.left() < 15:
            out["runs"][name] = {"skipped": SPENT}
            continue
        try:
            pipe = base if not options else build_ours(ctx.model, ctx.detector, device,
                                                       **with_int8_folder(options, ctx.int8_dir))
        except Exception as exc:
            out["runs"][name] = {"available": False, "reason": failure(exc)}
            continue
        try:
            out["runs"][name] = time_recognizer(pipe, crops, precision, flop_per_face, ref_rate, reference_embed, ctx)
        except Exception as exc:  # one failing variant must not sink the run
            out["runs"][name] = {"available": True, "failed": failure(exc)}
        progress(f"recognizer {name} done")
        del pipe
    return out
