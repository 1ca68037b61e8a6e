"""VectorIndex (exact FAISS IndexFlatIP / HNSW): results against numpy brute force, incremental add/remove,
files, bad input, the missing-extra error, and the scale benchmark's --smoke run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from modelscope_facemask.errors import IndexFileError, MissingExtraError, VectorInputError  # noqa: E402
from modelscope_facemask.support.extras import require  # noqa: E402
from modelscope_facemask.tools.gallery import bf16_scan, vector_index  # noqa: E402
from modelscope_facemask.tools.gallery.vector_index import EXACT_MAX_VECTORS, INDEX_KINDS, VectorIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("exact", "hnsw")
DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_identities: int, per: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Face-like rows: identity centre + per-image noise (same-identity cosine ~0.6)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_identities, dim)))
    noise = unit(rng.standard_normal((n_identities * per, dim)))
    return unit(np.sqrt(0.6) * np.repeat(centres, per, axis=0) + np.sqrt(0.4) * noise)


@pytest.fixture(scope="module")
def data():
    vectors = clustered(200, 10)                                       # 2,000 gallery rows
    ids = np.random.default_rng(1).permutation(10_000)[:len(vectors)].astype(np.int64) * 7 + 3  # caller's ids
    queries = clustered(200, 1, seed=5)[:50]
    return vectors, ids, queries


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    """Independent reference: float64 numpy inner products, full sort."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def test_kinds_and_threshold_are_documented_values():
    assert INDEX_KINDS == ("auto", "exact", "hnsw")
    assert isinstance(EXACT_MAX_VECTORS, int) and EXACT_MAX_VECTORS > 0


def test_exact_search_equals_numpy_brute_force(data):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind="exact")
    assert (index.kind, index.dim, len(index)) == ("exact", DIM, len(vectors))
    scores, found = index.search(queries, 5)
    ref_scores, ref_ids = brute_force(vectors, ids, queries, 5)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and scores.shape == found.shape == (50, 5)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_hnsw_finds_the_exact_top1_and_reports_exact_scores(data):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind="hnsw")
    assert index.kind == "hnsw" and index.ef_search == vector_index.HNSW_EF_SEARCH
    scores, found = index.search(queries, 5)
    ref_scores, ref_ids = brute_force(vectors, ids, queries, 5)
    assert np.mean(found[:, 0] == ref_ids[:, 0]) >= 0.98
    row_of = {int(i): r for r, i in enumerate(ids)}
    recomputed = np.array([[queries[q] @ vectors[row_of[int(i)]] for i in found[q]] for q in range(len(found))])
    np.testing.assert_allclose(scores, recomputed, atol=1e-5)      # scores are true inner products, not estimates


def test_auto_is_exact_up_to_the_limit_and_hnsw_above(data, monkeypatch):
    vectors, ids, _ = data
    monkeypatch.setattr(vector_index, "EXACT_MAX_VECTORS", 100)
    assert VectorIndex.build(vectors[:100], ids[:100]).kind == "exact"
    assert VectorIndex.build(vectors[:101], ids[:101]).kind == "hnsw"
    grown = VectorIndex.build(vectors[:100], ids[:100])
    grown.add(vectors[100:300], ids[100:300])
    assert grown.kind == "exact" and len(grown) == 300            # chosen at build; rebuilt() re-chooses
    assert grown.rebuilt("auto").kind == "hnsw"


@pytest.mark.parametrize("kind", KINDS)
def test_remove_and_add_are_incremental(data, kind):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors[:1500], ids[:1500], kind=kind)
    gone = ids[:1500:3]
    assert index.remove(np.concatenate([gone, [123456789]])) == len(gone)   # an unknown id is ignored
    assert index.remove(gone) == 0
    assert len(index) == 1500 - len(gone)
    live = np.setdiff1d(ids[:1500], gone)
    keep = np.isin(ids, live)
    _, found = index.search(queries, 5)
    assert not np.isin(found, gone).any()
    ref_scores, ref_ids = brute_force(vectors[keep], ids[keep], queries, 5)
    assert np.mean(found[:, 0] == ref_ids[:, 0]) >= 0.98
    index.add(vectors[1500:], ids[1500:])                          # new ids
    index.add(vectors[:1500:3], gone)                               # removed ids may come back
    assert len(index) == len(vectors)
    scores, found = index.search(queries, 5)
    ref_scores, ref_ids = brute_force(vectors, ids, queries, 5)
    assert np.mean(found[:, 0] == ref_ids[:, 0]) >= 0.98
    assert sorted(index.ids().tolist()) == sorted(ids.tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_adding_an_id_already_present_is_refused_and_changes_nothing(data, kind):
    vectors, ids, _ = data
    index = VectorIndex.build(vectors[:100], ids[:100], kind=kind)
    with pytest.raises(VectorInputError, match=f"id {ids[50]} is already in the index"):
        index.add(vectors[100:110], np.concatenate([ids[100:109], ids[50:51]]))
    assert len(index) == 100 and not np.isin(ids[100:110], index.ids()).any()


@pytest.mark.parametrize("kind", KINDS)
def test_fewer_vectors_than_k_pads_with_minus_one_and_minus_inf(data, kind):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors[:3], ids[:3], kind=kind)
    index.remove(ids[:1])
    scores, found = index.search(queries[:2], 4)
    assert found.shape == (2, 4)
    assert sorted(found[0, :2].tolist()) == sorted(ids[1:3].tolist())
    assert (found[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all() and np.isfinite(scores[:, :2]).all()
    empty = VectorIndex.build(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), kind=kind)
    assert len(empty) == 0 and (empty.search(queries[:1], 2)[1] == -1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_search_equals_brute_force_with_exact_scores(data, kind, monkeypatch):
    """bf16 scan + float32 re-score: the brute-force top-k, exact scores; several scan chunks and re-score blocks."""
    monkeypatch.setattr(bf16_scan, "_SCAN_CHUNK", 300)
    monkeypatch.setattr(bf16_scan, "_RESCORE_QUERIES", 7)
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind=kind)
    index.search_method = "bf16"
    assert index.search_method == "bf16"
    scores, found = index.search(queries, 5)
    ref_scores, ref_ids = brute_force(vectors, ids, queries, 5)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and scores.shape == (50, 5)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)  # float32 re-scored, not bf16-rounded (~4e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_search_follows_removals_and_additions(data, kind):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors[:1000], ids[:1000], kind=kind)
    index.search_method = "bf16"
    index.search(queries, 3)  # makes the bf16 copy
    gone = ids[:1000:3]
    assert index.remove(gone) == len(gone)
    live = ~np.isin(ids[:1000], gone)
    _, found = index.search(queries, 3)
    np.testing.assert_array_equal(found, brute_force(vectors[:1000][live], ids[:1000][live], queries, 3)[1])
    index.add(vectors[1000:], ids[1000:])
    keep = np.concatenate([live, np.ones(len(vectors) - 1000, bool)])
    _, found = index.search(queries, 3)
    np.testing.assert_array_equal(found, brute_force(vectors[keep], ids[keep], queries, 3)[1])


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_search_pads_like_faiss_when_fewer_vectors_than_k(data, kind):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors[:3], ids[:3], kind=kind)
    index.remove(ids[:1])
    index.search_method = "bf16"
    scores, found = index.search(queries[:2], 4)
    assert sorted(found[0, :2].tolist()) == sorted(ids[1:3].tolist())
    assert (found[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all() and np.isfinite(scores[:, :2]).all()
    empty = VectorIndex.empty(DIM, kind)
    empty.search_method = "bf16"
    assert (empty.search(queries[:1], 2)[1] == -1).all()


def test_bf16_search_method_is_checked_and_warns_without_bf16_hardware(data, monkeypatch, caplog):
    vectors, ids, _ = data
    index = VectorIndex.build(vectors[:10], ids[:10], kind="exact")
    with pytest.raises(VectorInputError, match=r"search method 'fp16' is not one of faiss, bf16"):
        index.search_method = "fp16"
    assert index.search_method == "faiss"
    monkeypatch.setattr("modelscope_facemask.engines.precision.cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger=vector_index.__name__):
        index.search_method = "bf16"
    assert "without bf16 hardware" in caplog.text and "'faiss'" in caplog.text
    assert vector_index.SEARCH_METHODS == ("faiss", "bf16")


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_keeps_results_and_removals(data, kind, tmp_path):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind=kind)
    index.remove(ids[::4])
    if kind == "hnsw":
        index.ef_search = 200
    path = tmp_path / "index.faiss"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]     # no temporary sibling left behind
    loaded = VectorIndex.load(path)
    assert (loaded.kind, loaded.dim, len(loaded)) == (kind, DIM, len(vectors) - len(ids[::4]))
    assert loaded.ef_search == (200 if kind == "hnsw" else None)
    a, b = index.search(queries, 5), loaded.search(queries, 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.isin(b[1], ids[::4]).any()
    plain = faiss.read_index(str(path))                                 # a plain FAISS file
    assert plain.ntotal == (len(vectors) if kind == "hnsw" else len(loaded))  # hnsw keeps tombstones (id -1)


def test_rebuilt_drops_tombstones_and_keeps_the_vectors(data):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind="hnsw")
    index.remove(ids[:500])
    assert index.removed_count == 500
    fresh = index.rebuilt("exact")
    assert fresh.kind == "exact" and fresh.removed_count == 0 and len(fresh) == len(vectors) - 500
    stored, stored_ids = fresh.vectors_and_ids()
    order = np.argsort(stored_ids)
    ref_order = np.argsort(ids[500:])
    np.testing.assert_array_equal(stored_ids[order], ids[500:][ref_order])
    np.testing.assert_array_equal(stored[order], vectors[500:][ref_order])


def test_a_failed_save_keeps_the_previous_file(data, tmp_path, monkeypatch):
    vectors, ids, _ = data
    path = tmp_path / "index.faiss"
    VectorIndex.build(vectors[:10], ids[:10], kind="exact").save(path)
    before = path.read_bytes()

    def broken_write(index, name):
        Path(name).write_bytes(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        VectorIndex.build(vectors, ids, kind="exact").save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def _write_wrong_type(path: Path) -> None:
    faiss.write_index(faiss.IndexFlatIP(DIM), str(path))


def _write_wrong_metric(path: Path) -> None:
    faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatL2(DIM)), str(path))


def _write_truncated(path: Path, data) -> None:
    vectors, ids, _ = data
    VectorIndex.build(vectors, ids, kind="hnsw").save(path)
    path.write_bytes(path.read_bytes()[:5000])


@pytest.mark.parametrize("make, message", [
    (lambda path, data: None, "does not exist"),
    (lambda path, data: path.mkdir(), "is not a file"),
    (lambda path, data: path.write_bytes(b"not an index at all"), "not a readable FAISS index"),
    (_write_truncated, "not a readable FAISS index"),
    (lambda path, data: _write_wrong_type(path), "holds a IndexFlatIP"),
    (lambda path, data: _write_wrong_metric(path), "not inner product"),
])
def test_bad_index_files_raise_index_file_error_naming_the_file(tmp_path, data, make, message):
    path = tmp_path / "index.faiss"
    make(path, data)
    with pytest.raises(IndexFileError, match=message) as caught:
        VectorIndex.load(path)
    assert str(path) in str(caught.value) and "rebuild" in str(caught.value)


def _rows(n=4, dim=DIM):
    return unit(np.random.default_rng(3).standard_normal((n, dim)))


@pytest.mark.parametrize("vectors, ids, message", [
    (_rows().astype(np.float64), np.arange(4), "must be float32"),
    (_rows()[0], np.arange(1), "must be 2-D"),
    ([[1.0, 0.0]], np.arange(1), "numpy array"),
    (np.where(np.eye(4, DIM) > 0, np.nan, _rows()).astype(np.float32), np.arange(4), "row 0 holds NaN"),
    (_rows() * 2, np.arange(4), "row 0 has L2 norm 2"),
    (_rows(), np.arange(3), r"shape \(4,\)"),
    (_rows(), np.array([0, 1, 1, 2]), "must be unique"),
    (_rows(), np.array([0, 1, -5, 2]), ">= 0"),
    (_rows(), np.arange(4, dtype=np.float32), "must be integers"),
])
def test_bad_vectors_or_ids_raise_vector_input_error(vectors, ids, message):
    with pytest.raises(VectorInputError, match=message):
        VectorIndex.build(vectors, ids)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_queries_k_and_kind_raise_vector_input_error(data, kind):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors[:20], ids[:20], kind=kind)
    with pytest.raises(VectorInputError, match="16 columns but the index holds 32-d"):
        index.search(_rows(2, 16), 3)
    with pytest.raises(VectorInputError, match="k must be a positive integer"):
        index.search(queries, 0)
    with pytest.raises(VectorInputError, match=r"vector\[None, :\]"):
        index.search(queries[0], 3)
    with pytest.raises(VectorInputError, match="16 columns"):
        index.add(_rows(2, 16), np.array([1, 2]))
    with pytest.raises(VectorInputError, match="not one of auto, exact, hnsw"):
        VectorIndex.build(vectors[:5], ids[:5], kind="ivf")
    assert index.search(queries[:0], 3)[1].shape == (0, 3)


def test_single_hnsw_queries_leave_the_thread_setting_alone(data):
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, kind="hnsw")
    before = faiss.omp_get_max_threads()
    one = index.search(queries[:1], 5)
    assert faiss.omp_get_max_threads() == before
    batch = index.search(queries[:8], 5)
    np.testing.assert_array_equal(one[1][0], batch[1][0])


def test_missing_faiss_names_the_extra(monkeypatch, data):
    vectors, ids, _ = data
    monkeypatch.setitem(sys.modules, "faiss", None)                  # "import faiss" now fails as if not installed
    expected = r"faiss is not installed .*pip install 'modelscope-facemask\[gallery\]'"
    with pytest.raises(MissingExtraError, match=expected):
        VectorIndex.build(vectors, ids)
    with pytest.raises(ImportError):                                    # still an ImportError for generic handlers
        require("faiss", "gallery", "the face gallery")


def test_require_returns_the_module_and_reports_a_broken_install(tmp_path, monkeypatch):
    assert require("faiss", "gallery", "x") is faiss
    (tmp_path / "broken_extra_pkg.py").write_text("import a_dependency_that_is_not_there_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"installed but cannot be imported .*\[ray\]"):
        require("broken_extra_pkg", "ray", "Ray embedding")


def test_scale_benchmark_smoke_run(tmp_path):
    out = tmp_path / "scale.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gallery_scale.py"), "--smoke", "--out", str(out)],
                   check=True, cwd=tmp_path, timeout=600, capture_output=True)
    report = json.loads(out.read_text())
    assert report["stage"] == "done" and report["parameters"]["vectors"] == 3000
    cos = report["data"]["cosines"]
    assert 0.55 < cos["same_identity"]["mean"] < 0.65 and abs(cos["different_identity"]["mean"]) < 0.02
    exact, hnsw = report["results"]["exact"], report["results"]["hnsw"]
    assert exact["rank1_identification"] == 1.0 and exact["index_file_bytes"] > 3000 * 512 * 4
    assert [e["ef_search"] for e in hnsw["ef_search_sweep"]] == [16, 64]
    assert all(0.0 <= e["recall_at_1"] <= 1.0 for e in hnsw["ef_search_sweep"])
    assert hnsw["remove"]["vectors"] == 30 and hnsw["remove"]["removed_ids_returned_after"] == 0  # 1% of identities
    assert {"p50_ms", "p99_ms"} <= set(exact["single_query"]) and "load_average_now" in report["device"]
