"""1:N search at scale: exact vs HNSW ``VectorIndex`` on a synthetic gallery shaped like face embeddings.

Data (seeded, identical on every machine): ``--identities`` random unit centres in 512-d; each enrolled image is
``normalise(sqrt(rho) * centre + sqrt(1 - rho) * noise)`` with a fresh random unit ``noise``, so two images of one
identity have cosine ~ rho (``--same-cosine``, default 0.6, like real same-person pairs) and images of different
identities ~ 0 +- 1/sqrt(512). Probes are fresh images (new noise) of enrolled identities. Uniform random vectors are
not used: they have no neighbourhood structure and make graph indexes look broken.

Measured: build time, index size (serialised bytes) and process RSS, single-query top-k latency p50/p99, total time of
one ``--probes`` batch, for exact search, for the bf16 scan (``search_method='bf16'``: bf16 matmul over every vector,
float32 re-score of the best; with the same-shape fp32 and bf16 matmul rates) and for HNSW at each ``--ef-search``;
HNSW and bf16-scan recall@1 (and @k) against exact;
identification rank-1 (probe's own identity at rank 1) for both; incremental remove/add timings; 1 vs all threads.
Nothing here is a test: numbers depend on the machine and its load (the JSON records os.getloadavg()).

    python benchmarks/gallery_scale.py                    # 1,000,000 vectors, peak RSS ~7 GB; about 12 min on 2
                                                          # quiet cores (HNSW build ~9.5 of them), hours on busy ones
    python benchmarks/gallery_scale.py --identities 10000 # 100,000 vectors
    python benchmarks/gallery_scale.py --smoke --out /tmp/gallery-smoke.json     # seconds
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
if str(HERE) not in sys.path:  # gallery_data beside this file, also when it is loaded by path
    sys.path.insert(0, str(HERE))

from modelscope_facemask.tools.gallery.vector_index import (  # noqa: E402
    HNSW_EF_CONSTRUCTION, HNSW_M, VectorIndex)
from modelscope_facemask.support.json_output import write_json  # noqa: E402

from gallery_data import cosine_statistics, synthetic_gallery  # noqa: E402

def rss_bytes() -> dict[str, int]:
    """Current and peak resident set size of this process."""
    current = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) * 1024
    return {"rss_bytes": current, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def latency(index: VectorIndex, probes: np.ndarray, k: int, count: int) -> dict[str, Any]:
    """Single-query top-k latency over the first ``count`` probes, with FAISS's default OpenMP threads and with one
    (a single query gains nothing from a thread team, and on a busy machine the team's barrier costs)."""
    import faiss

    default = faiss.omp_get_max_threads()
    result = {"omp_threads_default": default, **_latency(index, probes, k, count)}
    if default > 1:
        faiss.omp_set_num_threads(1)
        try:
            result["one_thread"] = _latency(index, probes, k, count)
        finally:
            faiss.omp_set_num_threads(default)
    return result


def _latency(index: VectorIndex, probes: np.ndarray, k: int, count: int) -> dict[str, float]:
    index.search(probes[:1], k)  # warm-up
    times = []
    for row in probes[:count]:
        start = time.perf_counter()
        index.search(row[None, :], k)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"queries": int(len(ms)), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def matmul_rate(dtype: Any, rows: int, dim: int, columns: int = 65_536, repeats: int = 5) -> float:
    """Achieved FLOP/s of a torch (rows, dim) @ (dim, columns) matmul in ``dtype`` (the bf16 scan's shape)."""
    import torch

    a = torch.randn(rows, dim).to(dtype)
    b = torch.randn(columns, dim).to(dtype)
    a @ b.T  # warm-up
    _, seconds = timed(lambda: [a @ b.T for _ in range(repeats)])
    return 2.0 * rows * dim * columns * repeats / seconds


def bf16_scan(index: VectorIndex, probes: np.ndarray, k: int, exact_scores: np.ndarray, exact_ids: np.ndarray,
              gallery_identity: np.ndarray, probe_ids: np.ndarray, single_queries: int) -> dict[str, Any]:
    """``search_method='bf16'`` on the exact index: first search (makes the bf16 copy), then a timed batch, recall
    against exact search, single-query latency, and the same-shape fp32/bf16 matmul rates for context."""
    import torch

    from modelscope_facemask.engines.precision import cpu_has_bf16

    index.search_method = "bf16"
    _, first_s = timed(lambda: index.search(probes[:1], k))
    (scores, found), batch_s = timed(lambda: index.search(probes, k))
    same = found[:, 0] == exact_ids[:, 0]
    flop = 2.0 * len(probes) * len(index) * index.dim
    rates = {name: matmul_rate(dtype, len(probes), index.dim) for name, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    result = {
        "search_method": "bf16", "cpu_bf16_hardware": cpu_has_bf16(), "torch_threads": torch.get_num_threads(),
        "first_search_s": first_s, "batch_queries": int(len(probes)), "batch_total_s": batch_s,
        "scan_flop_per_s": flop / batch_s, "matmul_flop_per_s_same_shape": rates,
        "scan_share_of_bf16_matmul_rate": flop / batch_s / rates["bf16"],
        "recall_at_1": float(np.mean(same)),
        f"recall_at_{k}": float(np.mean([len(np.intersect1d(f, e)) / k for f, e in zip(found, exact_ids)])),
        "top1_score_max_abs_diff_when_same": float(np.max(np.abs(scores[:, 0] - exact_scores[:, 0])[same],
                                                          initial=0.0)),
        "rank1_identification": float(np.mean(gallery_identity[found[:, 0]] == probe_ids)), **rss_bytes(),
    }
    result["single_query"] = _latency(index, probes, k, single_queries)
    index.search_method = "faiss"
    return result


def index_file_bytes(index: VectorIndex, folder: str) -> tuple[int, float, float]:
    """(size of the saved index file, save seconds, load seconds); the file is deleted afterwards."""
    path = Path(folder) / "index.faiss"
    _, save_s = timed(lambda: index.save(path))
    size = path.stat().st_size
    loaded, load_s = timed(lambda: VectorIndex.load(path))
    del loaded
    path.unlink()
    return size, save_s, load_s


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Stages:
    """The report being written and where: ``checkpoint(stage)`` rewrites the JSON ("stage" says how far it got)."""

    def __init__(self, report: dict[str, Any], out: Path, started: float) -> None:
        self.report, self.out, self.started = report, out, started
        self.results: dict[str, Any] = report["results"]

    def checkpoint(self, stage: str) -> None:
        """Record ``stage``, the load average and the runtime so far, and rewrite the JSON."""
        self.report["stage"] = stage
        self.report["device"]["load_average_now"] = list(os.getloadavg())
        self.report["runtime_s"] = time.perf_counter() - self.started
        write_json(self.out, self.report)


@dataclass
class Data:
    """The synthetic gallery (vectors, identity per row, ids) and the probes (vectors, their identities)."""

    gallery: np.ndarray
    gallery_identity: np.ndarray
    ids: np.ndarray
    probes: np.ndarray
    probe_ids: np.ndarray


def log(*parts: Any) -> None:
    """A progress line on stderr."""
    print(*parts, file=sys.stderr, flush=True)


def report_header(args: argparse.Namespace) -> dict[str, Any]:
    """The report before anything is measured: command, date, machine, versions, parameters, empty results."""
    import faiss

    load_before = os.getloadavg()
    return {
        "benchmark": "gallery_scale", "stage": "started",
        "command": " ".join(["python", *[Path(sys.argv[0]).as_posix(), *sys.argv[1:]]]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "omp_threads": faiss.omp_get_max_threads(),
                   "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
                   "load_average_before": list(load_before)},
        "versions": {"faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "parameters": {"vectors": args.identities * args.per_identity, "identities": args.identities,
                       "images_per_identity": args.per_identity, "dim": args.dim,
                       "same_cosine_target": args.same_cosine, "probes": args.probes, "k": args.k,
                       "single_queries": args.single_queries, "seed": args.seed, "ef_search": args.ef_search},
        "results": {},
    }


def generate(args: argparse.Namespace, stages: Stages) -> Data:
    """The seeded gallery and probes, with their generation time and measured cosines in the report."""
    n = args.identities * args.per_identity
    log(f"generating {n} vectors ({args.identities} identities x {args.per_identity}), {args.probes} probes")
    (gallery, gallery_identity, probes, probe_ids), gen_s = timed(lambda: synthetic_gallery(
        args.identities, args.per_identity, args.dim, args.same_cosine, args.probes, args.seed))
    cosines = cosine_statistics(gallery, args.per_identity, probes, probe_ids, args.seed)
    log(f"  {gen_s:.1f}s; same-identity cosine {cosines['same_identity']['mean']:.3f}")
    stages.report["data"] = {"generation_s": gen_s, "cosines": cosines}
    stages.checkpoint("data")
    return Data(gallery, gallery_identity, np.arange(n, dtype=np.int64), probes, probe_ids)


def measure_exact(args: argparse.Namespace, data: Data, stages: Stages, tmp: str) -> tuple[np.ndarray, np.ndarray]:
    """The exact index (build, batch, single queries, file) and the bf16 scan on it; returns exact search's
    (scores, ids) for the probes, the ground truth of the recalls."""
    results, k = stages.results, args.k
    exact, build_s = timed(lambda: VectorIndex.build(data.gallery, data.ids, kind="exact"))
    (exact_scores, exact_ids), batch_s = timed(lambda: exact.search(data.probes, k))
    log(f"exact: build {build_s:.1f}s, {args.probes} probes {batch_s:.2f}s")
    results["exact"] = {
        "index": "IndexIDMap2(IndexFlatIP)", "build_s": build_s, **rss_bytes(), "batch_queries": args.probes,
        "batch_total_s": batch_s,
        "rank1_identification": float(np.mean(data.gallery_identity[exact_ids[:, 0]] == data.probe_ids)),
    }
    stages.checkpoint("exact batch")
    results["exact"]["single_query"] = latency(exact, data.probes, k, args.single_queries)
    size, save_s, load_s = index_file_bytes(exact, tmp)
    results["exact"].update({"index_file_bytes": size, "save_s": save_s, "load_s": load_s})
    stages.checkpoint("exact")
    results["bf16_scan"] = bf16_scan(exact, data.probes, k, exact_scores, exact_ids, data.gallery_identity,
                                     data.probe_ids, args.single_queries)
    log(f"bf16 scan: {args.probes} probes {results['bf16_scan']['batch_total_s']:.2f}s, "
        f"recall@1 {results['bf16_scan']['recall_at_1']:.4f}")
    stages.checkpoint("bf16 scan")
    return exact_scores, exact_ids


def exact_only_target(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """The target (recall@1 >= 0.99 and 1,000 probes in <= 1 s) judged on exact search and the bf16 scan."""
    scan = results["bf16_scan"]
    return {"recall_at_1_min": 0.99, "batch_1000_max_s": 1.0,
            "exact_batch_total_s": results["exact"]["batch_total_s"],
            "bf16_scan_batch_total_s": scan["batch_total_s"],
            "bf16_scan_recall_at_1": scan["recall_at_1"],
            "met": bool(results["exact"]["batch_total_s"] <= args.probes / 1000
                        or (scan["recall_at_1"] >= 0.99
                            and scan["batch_total_s"] <= args.probes / 1000))}


def sweep_entry(hnsw: VectorIndex, ef: int, k: int, data: Data, exact_scores: np.ndarray,
                exact_ids: np.ndarray) -> dict[str, Any]:
    """HNSW at ``ef_search=ef``: one timed batch of the probes, recalls against exact search, rank-1."""
    hnsw.ef_search = ef
    (scores, found), batch_s = timed(lambda: hnsw.search(data.probes, k))
    recall_k = np.mean([len(np.intersect1d(found[i], exact_ids[i])) / k for i in range(len(found))])
    return {"ef_search": ef, "batch_total_s": batch_s,
            "recall_at_1": float(np.mean(found[:, 0] == exact_ids[:, 0])),
            f"recall_at_{k}": float(recall_k),
            "top1_score_max_abs_diff_when_same": float(np.max(np.abs(
                scores[:, 0] - exact_scores[:, 0])[found[:, 0] == exact_ids[:, 0]], initial=0.0)),
            "rank1_identification": float(np.mean(data.gallery_identity[found[:, 0]] == data.probe_ids))}


def measure_hnsw_sweep(args: argparse.Namespace, data: Data, exact_scores: np.ndarray, exact_ids: np.ndarray,
                       stages: Stages) -> tuple[VectorIndex, dict[str, Any]]:
    """Build HNSW, then a batch at each ``--ef-search`` and the single-query latency at each; returns the index
    set to the chosen ef_search (the first with recall@1 >= 0.99, else the last) and that sweep entry."""
    hnsw, build_s = timed(lambda: VectorIndex.build(data.gallery, data.ids, kind="hnsw"))
    log(f"hnsw: build {build_s:.1f}s")
    sweep: list[dict[str, Any]] = []
    stages.results["hnsw"] = {"index": f"IndexIDMap(IndexHNSWFlat M={HNSW_M})", "M": HNSW_M,
                              "ef_construction": HNSW_EF_CONSTRUCTION, "build_s": build_s, **rss_bytes(),
                              "ef_search_sweep": sweep}
    stages.checkpoint("hnsw build")
    for ef in args.ef_search:
        entry = sweep_entry(hnsw, ef, args.k, data, exact_scores, exact_ids)
        sweep.append(entry)
        log(f"  ef {ef}: {args.probes} probes {entry['batch_total_s']:.2f}s, recall@1 {entry['recall_at_1']:.4f}")
        stages.checkpoint(f"hnsw ef_search {ef} batch")
    for entry in sweep:
        hnsw.ef_search = entry["ef_search"]
        entry["single_query"] = latency(hnsw, data.probes, args.k, args.single_queries)
        stages.checkpoint(f"hnsw ef_search {entry['ef_search']} latency")
    chosen = next((e for e in sweep if e["recall_at_1"] >= 0.99), sweep[-1])
    hnsw.ef_search = chosen["ef_search"]
    return hnsw, chosen


def measure_hnsw_changes(args: argparse.Namespace, data: Data, hnsw: VectorIndex) -> dict[str, Any]:
    """The probes' batch time with one OpenMP thread and with all, then incremental changes: remove every image
    of 1% of identities (tombstones), search, add them back under new ids."""
    import faiss

    threads = {}
    for count in sorted({1, faiss.omp_get_max_threads()}):
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(count)
        _, threads[str(count)] = timed(lambda: hnsw.search(data.probes, args.k))
        faiss.omp_set_num_threads(previous)
    drop_identities = np.arange(0, args.identities, 100)
    drop = np.flatnonzero(np.isin(data.gallery_identity, drop_identities))
    removed, remove_s = timed(lambda: hnsw.remove(data.ids[drop]))
    _, found_after = hnsw.search(data.probes, args.k)
    leaked = int(np.isin(found_after, data.ids[drop]).sum())
    _, add_s = timed(lambda: hnsw.add(data.gallery[drop], data.ids[drop] + len(data.ids)))
    return {"batch_total_s_by_omp_threads": threads,
            "remove": {"vectors": removed, "seconds": remove_s, "removed_ids_returned_after": leaked},
            "add_back": {"vectors": int(len(drop)), "seconds": add_s}}


def hnsw_target(args: argparse.Namespace, chosen: dict[str, Any], scan: dict[str, Any]) -> dict[str, Any]:
    """The target (recall@1 >= 0.99 and 1,000 probes in <= 1 s) judged on HNSW's chosen ef_search and the bf16
    scan."""
    return {"recall_at_1_min": 0.99, "batch_1000_max_s": 1.0,
            "hnsw_chosen_recall_at_1": chosen["recall_at_1"],
            "hnsw_chosen_batch_total_s": chosen["batch_total_s"],
            "bf16_scan_recall_at_1": scan["recall_at_1"],
            "bf16_scan_batch_total_s": scan["batch_total_s"],
            "met": bool(any(r >= 0.99 and t <= args.probes / 1000 for r, t in (
                (chosen["recall_at_1"], chosen["batch_total_s"]),
                (scan["recall_at_1"], scan["batch_total_s"]))))}


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run every measurement; the JSON at ``out`` is rewritten after each stage ("stage" says how far it got)."""
    started = time.perf_counter()
    stages = Stages(report_header(args), out, started)
    report, results = stages.report, stages.results
    data = generate(args, stages)
    tmp = tempfile.mkdtemp(prefix="gallery-scale-")
    exact_scores, exact_ids = measure_exact(args, data, stages, tmp)
    if args.exact_only:
        report["target"] = exact_only_target(args, results)
        os.rmdir(tmp)
        stages.checkpoint("done")
        return report
    hnsw, chosen = measure_hnsw_sweep(args, data, exact_scores, exact_ids, stages)
    results["hnsw"].update({"chosen_ef_search": chosen["ef_search"], **measure_hnsw_changes(args, data, hnsw)})
    report["target"] = hnsw_target(args, chosen, results["bf16_scan"])
    stages.checkpoint("hnsw changes")
    size, save_s, load_s = index_file_bytes(hnsw, tmp)
    results["hnsw"].update({"index_file_bytes": size, "save_s": save_s, "load_s": load_s, **rss_bytes()})
    os.rmdir(tmp)
    stages.checkpoint("done")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--per-identity", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--same-cosine", type=float, default=0.6)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (300 identities, 100 probes): seconds")
    parser.add_argument("--exact-only", action="store_true",
                        help="measure the exact index only (the 1M HNSW build takes about 40 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/gallery-scale-cpu-DATE.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.identities, args.probes, args.single_queries, args.ef_search = 300, 100, 10, [16, 64]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = args.out or HERE / "results" / f"gallery-scale-cpu-{date}.json"
    run(args, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
