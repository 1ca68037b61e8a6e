"""The performance tables of docs/cpu-and-gpu.md (linked from the README), generated from bench.py's results JSON (never typed by hand).

    python benchmarks/readme_table.py                                   # newest cpu-*.json and gpu-*.json: markdown
    python benchmarks/readme_table.py benchmarks/results/cpu-2026-11-30.json
    python benchmarks/readme_table.py --write docs/cpu-and-gpu.md       # replace the text between the markers

``--write`` replaces what lies between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` (markers kept;
the file is rewritten atomically). Exit status 2 when a file is not a bench.py result or the markers are missing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).resolve().parent / "results"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
SET_TITLES = {"photos": "portraits + group photo", "jpeg640": "640×640 single-face JPEGs"}


class TableError(Exception):
    """A results file or README that the generator cannot use (the message names it and the fix)."""


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), or an en dash for missing values."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        text = f"{value:.{digits}g}"
        return text if "e" not in text else f"{value:.1e}"
    return str(value)


def load_result(path: Path) -> dict[str, Any]:
    """A bench.py result (TableError when the file is something else)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: cannot read it as JSON ({exc}); pass a results file written by benchmarks/bench.py")
    if not isinstance(data, dict) or not {"modes", "reference", "targets", "device"} <= set(data):
        raise TableError(f"{path}: not a benchmarks/bench.py result (no modes/reference/targets/device); "
                         "run benchmarks/bench.py to produce one")
    return data


def newest_results(folder: Path = RESULTS) -> list[Path]:
    """The newest ``cpu-*.json`` and the newest ``gpu-*.json`` in ``folder`` that bench.py wrote."""
    chosen = []
    for prefix in ("cpu-", "gpu-"):
        for path in sorted(folder.glob(f"{prefix}*.json"), reverse=True):
            try:
                load_result(path)
            except TableError:
                continue
            chosen.append(path)
            break
    return chosen


def describe(data: dict[str, Any], name: str) -> str:
    device = data["device"]
    where = device.get("gpu") or device.get("cpu")
    v = data["versions"]
    return (f"**{where}** ({device.get('cores_usable', device.get('cores'))} cores usable, {device.get('torch_threads')} "
            f"torch threads), {data['date'][:10]}, torch {v.get('torch')}, ModelScope {v.get('modelscope')}, "
            f"ONNX Runtime {v.get('onnxruntime')}, OpenVINO {v.get('openvino')}; load average "
            f"{fmt(data.get('load_average_start', [None])[0], 2)}; {data.get('weights', '')}. Source: `{name}`."
            + ("" if not data.get("cpu_int8_hardware") else " CPU int8/bf16 instructions: " + ", ".join(
                f"{k} {'yes' if v else 'no'}" for k, v in data["cpu_int8_hardware"].items()) + ".")
            + "".join(f" {note}" for note in data.get("run_notes", []))
            + ("" if data.get("complete", True) else " **Partial run: stopped before the end (time limit).**"))


def mode_rows(data: dict[str, Any]) -> list[str]:
    """The speed pass (no fidelity columns: its synthetic R50's detections mean nothing; see fidelity_rows)."""
    gpu = data["device"].get("type") == "cuda"
    memory = "peak GPU MiB" if gpu else "peak RSS MiB"
    rows = [f"| mode | input | images/s | faces/s | latency p50 / p95 ms | speed-up | % of peak | {memory} |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for set_name, ref in data["reference"].items():
        rows.append(f"| reference (ModelScope) | {SET_TITLES.get(set_name, set_name)} | {fmt(ref['images_per_s'])} | "
                    f"{fmt(ref['faces_per_s'])} | {fmt(ref['latency_ms_p50'])} / {fmt(ref['latency_ms_p95'])} | 1 | – | "
                    f"{fmt(ref.get('peak_gpu_memory_mib' if gpu else 'peak_rss_mib'))} |")
    for mode, result in data["modes"].items():
        if mode == "recognizer":
            continue
        if not result.get("available"):
            rows.append(f"| {mode} | – | unavailable: {result.get('reason', '')[:80]} | | | | | |")
            continue
        for set_name, r in result["sets"].items():
            if "skipped" in r or "failed" in r:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['failed'][:80]}"
                rows.append(f"| {mode} | {SET_TITLES.get(set_name, set_name)} | {why} | | | | | |")
                continue
            rows.append(f"| {mode} | {SET_TITLES.get(set_name, set_name)} | {fmt(r['images_per_s'])} | {fmt(r['faces_per_s'])} | "
                        f"{fmt(r['latency_ms_p50'])} / {fmt(r['latency_ms_p95'])} | {fmt(r['speedup_vs_reference'])}× | "
                        f"{fmt(r.get('percent_of_peak'), 2)} | "
                        f"{fmt(r.get('peak_gpu_memory_mib' if gpu else 'peak_rss_mib'))} |")
    return rows


def fidelity_rows(data: dict[str, Any]) -> list[str]:
    """The fidelity pass: the real mobilenet0.25 on the real portraits, each mode against torch fp32."""
    fid = data.get("fidelity")
    if not fid:
        return []
    if not fid.get("available", True):
        return [f"Fidelity pass: not run ({fid.get('reason', '')[:120]}).", ""]
    rows = [f"Fidelity (real mobilenet0.25 detector, {len(fid['images'])} real photos, {fid['faces']} faces, all faces; "
            f"against {fid['baseline']}; synthetic recognizer weights, so these do not transfer to trained weights):",
            "", "| mode | kind | matched / lost / extra (IoU ≥ 0.9) | landmark px max / median | min cosine (matched) | "
            "max abs Δ | recognizer min cosine, identical crops | bound |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for mode, r in fid["modes"].items():
        if not r.get("available"):
            rows.append(f"| {mode} | unavailable: {r.get('reason', '')[:80]} | | | | | | |")
            continue
        rows.append(f"| {mode} | {r['label']} | {r['matched']} / {r['lost']} / {r['extra']} | "
                    f"{fmt(r['landmark_px_max'], 2)} / {fmt(r['landmark_px_median'], 2)} | {fmt(r['min_cosine'], 7)} | "
                    f"{fmt(r['max_abs_embedding_diff'], 2)} | {fmt(r['recognizer_identical_crops_min_cosine'], 7)} | "
                    f"{r['bound'].replace('|', '/')} |")
    return rows


def recognizer_rows(data: dict[str, Any]) -> list[str]:
    rec = data["modes"].get("recognizer")
    if not rec:
        return []
    rows = [f"Recognizer only ({fmt(rec['gflop_per_face'])} GFLOP/face, {rec['faces']} aligned faces, batch {rec['batch']}; "
            f"reference: ModelScope's recognizer at batch 1, {fmt(rec['reference']['faces_per_s'])} faces/s):", "",
            "| run | faces/s | batch-1 ms | speed-up | GFLOP/s | % of peak | min cosine |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rec["runs"].items():
        if not r.get("available") or "failed" in r:
            why = "skipped" if "skipped" in r else "failed" if "failed" in r else "unavailable"
            rows.append(f"| {name} | {why}: {(r.get('skipped') or r.get('failed') or r.get('reason', ''))[:80]} | | | | | |")
            continue
        rows.append(f"| {name} | {fmt(r['faces_per_s'])} | {fmt(r['batch1_latency_ms_p50'])} | {fmt(r['speedup_vs_reference'])}× | "
                    f"{fmt(r['achieved_gflops'])} | {fmt(r.get('percent_of_peak'), 2)} | {fmt(r['min_cosine_vs_reference'], 7)} |")
    return rows


def target_rows(data: dict[str, Any]) -> list[str]:
    rows = ["| target | required | measured | met |", "| --- | ---: | ---: | --- |"]
    for key, t in data["targets"].items():
        if t.get("met") is None and "note" in t:
            continue  # a target of the other device kind
        met = {True: "yes", False: "**no**", None: "not measured"}[t.get("met")]
        rows.append(f"| {t['what'].replace('|', '/')} | {t['required']} | {fmt(t['measured'])} | {met} |")
    return rows


def table(paths: Sequence[Path]) -> str:
    """The markdown for the given results files."""
    if not paths:
        raise TableError(f"no bench.py results in {RESULTS}; run benchmarks/bench.py first or pass a file")
    parts = []
    for path in paths:
        data = load_result(path)
        peaks = data.get("peaks", {})
        bf16 = (f", bf16 modes against the bf16 GEMM probe {fmt(peaks['cpu_gemm_bf16_gflops'])} GFLOP/s"
                if "cpu_gemm_bf16_gflops" in peaks else "")
        bf16 += (f", int8 modes against the int8 GEMM probe {fmt(peaks['cpu_gemm_int8_gops'])} GOP/s"
                 if "cpu_gemm_int8_gops" in peaks else "")
        peak = (f"peak: fp32 GEMM probe {fmt(peaks.get('cpu_gemm_gflops'))} GFLOP/s{bf16}"
                if data["device"].get("type") != "cuda"
                else f"peak: spec sheet {peaks.get('gpu_spec_name')} (dense; fp32 modes vs TF32)")
        parts += [describe(data, Path(path).name), "", *mode_rows(data), "",
                  f"Speed-up: images/s over the reference flow on the same images in the same run; {peak}.", ""]
        fid = fidelity_rows(data)
        if fid:
            parts += [*fid, ""]
        rec = recognizer_rows(data)
        if rec:
            parts += [*rec, ""]
        load = data.get("load", {}).get("model")
        if load:
            parts += [f"Weights load ({fmt(load['file_mib'])} MiB file, fresh process, warm disk): {fmt(load['seconds'])} s, "
                      f"peak RSS growth {fmt(load['peak_rss_over_file'])}× the file.", ""]
        parts += [*target_rows(data), ""]
    return "\n".join(parts).rstrip() + "\n"


def replace_between_markers(text: str, body: str, *, where: str = "README") -> str:
    """``text`` with the part between START and END replaced by ``body`` (TableError when they are missing)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise TableError(f"{where}: markers {START} ... {END} not found (in that order); add them where the table goes")
    return text[: start + len(START)] + "\n" + body + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path, help="bench.py JSON files (default: newest cpu-*.json, gpu-*.json)")
    parser.add_argument("--write", type=Path, metavar="README", help="replace the text between the markers in this file")
    args = parser.parse_args(argv)
    try:
        body = table(args.results or newest_results())
        if args.write is None:
            sys.stdout.write(body)
            return 0
        from modelscope_facemask.support.atomic_files import write_text_atomic

        text = args.write.read_text(encoding="utf-8")
        write_text_atomic(args.write, replace_between_markers(text, body, where=str(args.write)))
        print(f"updated {args.write}")
        return 0
    except (TableError, OSError) as exc:
        print(f"readme_table: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
