"""``facemask embed --ray`` on a local Ray instance with 2 workers, on the real portraits with the small deterministic
recognizer and the real mobilenet0.25 detector: the rows equal the single-process command's, a corrupt JPEG gets its
error row, and a rerun skips what the folder already holds."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest
import ray
import torch

from modelscope_facemask.cli import main
from modelscope_facemask.tools.corpus.face_rows import read_face_rows, rows_metadata


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray (2 CPUs, 200 MB object store, no dashboard); ``facemask embed --ray`` uses it as it is."""
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, ignore_reinit_error=True,
             logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    return small_model_dir  # the regression model of tests/regression/inputs.py, shared: read only


@pytest.fixture(scope="module")
def inputs(portraits, mixed_images, tmp_path_factory) -> Path:
    """The six portraits, a two-face picture, a picture without a face and a corrupt JPEG."""
    folder = tmp_path_factory.mktemp("ray-images")
    for name, path in portraits.items():
        shutil.copy(path, folder / f"{name}.jpg")
    for path in mixed_images.values():
        shutil.copy(path, folder / path.name)
    return folder


def _sorted_rows(path: Path) -> list[dict]:
    return sorted(read_face_rows(path).to_pylist(), key=lambda r: (r["source"], r["face_index"]))


def _close(a, b, atol: float) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.allclose(a, b, rtol=0, atol=atol))


def test_ray_rows_equal_single_process_and_resume_skips_done(local_ray, model_dir, inputs, tmp_path, capsys):
    # The same arithmetic in both runs: each image alone (--batch-size 1) on 1 torch thread (what each of the 2 actors
    # gets from 2 CPUs). The detector's floats differ in the last bits with the batch's make-up and the thread count,
    # and the uint8 rounding of the aligned crop turns a 3e-5 px landmark difference into up to ~3e-5 in an embedding
    # (measured on impostor_1.jpg), above the 1e-5 asked here.
    base = ["embed", str(inputs), "--model", str(model_dir), "--device", "cpu", "--all-faces", "--no-progress",
            "--batch-size", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*base, "--out", str(tmp_path / "single")]) == 1  # the corrupt JPEG
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert main([*base, "--ray", "--workers", "2", "--shard-size", "3", "--out", str(tmp_path / "ray")]) == 1
    summary = capsys.readouterr().out
    single, rows = _sorted_rows(tmp_path / "single"), _sorted_rows(tmp_path / "ray")
    faces = sum(r["face_index"] >= 0 for r in single)
    assert (f"9 image(s) embedded, 0 already in '{tmp_path / 'ray'}' skipped, {faces} face(s), 1 without a face, "
            "1 error(s)") in summary
    assert faces == 8 and "on 2 worker(s)" in summary  # six portraits, two in the group picture, none in blank.png
    assert [(r["source"], r["face_index"]) for r in rows] == [(r["source"], r["face_index"]) for r in single]
    for mine, theirs in zip(rows, single):
        assert _close(mine["embedding"], theirs["embedding"], 1e-5), mine["source"]
        assert _close(mine["box"], theirs["box"], 1e-3) and _close(mine["landmarks"], theirs["landmarks"], 1e-3)
        assert _close(mine["score"], theirs["score"], 1e-5)
        assert (mine["error"] is None) == (theirs["error"] is None)
    (bad,) = [r for r in rows if r["error"] is not None]
    assert bad["source"] == str(inputs / "corrupt.jpg") and bad["face_index"] == -1 and bad["embedding"] is None
    assert "cannot decode image" in bad["error"] and "corrupt.jpg" in bad["error"]
    meta, single_meta = rows_metadata(read_face_rows(tmp_path / "ray")), rows_metadata(read_face_rows(tmp_path / "single"))
    assert meta["contract_sha256"] == single_meta["contract_sha256"] and meta["weights"] == single_meta["weights"]
    assert meta["torch_threads"] == 1  # 2 CPUs shared by 2 workers: each actor runs torch on 1 thread

    # Resume: drop one shard, add a new image and leave a half-written shard behind; the rerun embeds exactly the
    # dropped shard's images and the new one, and leaves the other shards byte for byte as they were.
    shards = sorted((tmp_path / "ray").iterdir())
    assert len(shards) >= 2
    dropped = shards[0]
    redo = set(read_face_rows(dropped).column("source").to_pylist())
    dropped.unlink()
    kept = {p.name: p.read_bytes() for p in shards[1:]}
    (tmp_path / "ray" / ".part-0.parquet.facemask-tmp-0123456789ab.parquet").write_bytes(shards[1].read_bytes()[:99])
    cv2.imwrite(str(inputs / "z_mirrored.png"), cv2.imread(str(inputs / "person_b_2.jpg"))[:, ::-1])
    try:
        code = main([*base, "--ray", "--workers", "2", "--out", str(tmp_path / "ray")])
    finally:
        (inputs / "z_mirrored.png").unlink()
    summary = capsys.readouterr().out
    assert code == (1 if str(inputs / "corrupt.jpg") in redo else 0)
    assert f"{len(redo) + 1} image(s) embedded, {9 - len(redo)} already in" in summary
    assert {p.name: p.read_bytes() for p in (tmp_path / "ray").glob("part-*.parquet") if p.name in kept} == kept
    after = read_face_rows(tmp_path / "ray")
    assert sorted(set(after.column("source").to_pylist())) == sorted({r["source"] for r in single} |
                                                                     {str(inputs / "z_mirrored.png")})
    assert pc.sum(pc.equal(after.column("source"), str(inputs / "z_mirrored.png"))).as_py() == 1
    redone = sorted((r for r in after.to_pylist() if r["source"] in redo), key=lambda r: (r["source"], r["face_index"]))
    assert [(r["source"], r["face_index"]) for r in redone] == [(r["source"], r["face_index"]) for r in single
                                                                if r["source"] in redo]


def test_summary_of_a_run_with_nothing_left_does_not_claim_workers():
    from modelscope_facemask.tools.corpus.ray_embed import RayEmbedSummary

    assert RayEmbedSummary(skipped=7, workers=2).line("rows") == (
        "0 image(s) embedded, 7 already in 'rows' skipped; nothing to do (Ray not started)")
    done = RayEmbedSummary(images=3, skipped=1, faces=2, errors=1, seconds=2.0, workers=2, shards=["a"]).line("rows")
    assert done.startswith("3 image(s) embedded, 1 already in 'rows' skipped, 2 face(s), 0 without a face, 1 error(s), "
                           "2.0 s, 1.50")
    assert done.endswith("on 2 worker(s), 1 new shard(s)")
