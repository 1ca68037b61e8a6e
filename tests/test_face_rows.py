"""Face rows (one Parquet row per face) and the single-process ``facemask embed --out FILE.parquet|DIR``, on the real
portraits with the small deterministic recognizer and the real mobilenet0.25 detector. Expected values come from
the pipeline's own outputs and from the .npz writer, never from the rows code under test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.cli import main
from modelscope_facemask.errors import FaceRowsError
from modelscope_facemask.tools.corpus.face_rows import (METADATA_KEY, done_sources, drop_error_rows, face_rows, read_face_rows,
                                           rows_metadata, write_face_rows, write_shard)

METADATA = {"model": "test/model", "weights": {"recognizer": {"sha256": "a" * 64}}, "contract_sha256": "b" * 64,
            "precision": "fp32"}


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    return small_model_dir  # the regression model of tests/regression/inputs.py, shared: read only


@pytest.fixture(scope="module")
def pipeline(model_dir) -> FaceMaskPipeline:
    return FaceMaskPipeline(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def images(portraits, mixed_images) -> dict[str, str]:
    """A two-face picture, a portrait, a picture without a face and a corrupt JPEG."""
    return {"group": str(mixed_images["group"]), "portrait": str(portraits["person_a_1"]),
            "blank": str(mixed_images["blank"]), "corrupt": str(mixed_images["corrupt"])}


@pytest.fixture(scope="module")
def outputs(pipeline, images) -> list[dict]:
    return pipeline(list(images.values()), max_faces=None)


def test_one_row_per_face_and_one_per_empty_or_failed_image(images, outputs):
    table = face_rows(list(images.values()), outputs, metadata=METADATA)
    assert [len(o["scores"]) for o in outputs] == [2, 1, 0, 0] and "error" in outputs[3]
    assert table.column("source").to_pylist() == [images["group"]] * 2 + [images["portrait"], images["blank"],
                                                                            images["corrupt"]]
    assert table.column("face_index").to_pylist() == [0, 1, 0, -1, -1]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 512)
    assert table.schema.field("box").type == pa.list_(pa.float32(), 4)
    assert table.schema.field("landmarks").type == pa.list_(pa.float32(), 10)
    faces = table.slice(0, 3)
    expected = {key: np.concatenate([o[key] for o in outputs[:2]]) for key in ("img_embedding", "boxes", "keypoints",
                                                                               "scores")}
    assert np.array_equal(np.stack(faces.column("embedding").to_numpy(zero_copy_only=False)), expected["img_embedding"])
    assert np.array_equal(np.stack(faces.column("box").to_numpy(zero_copy_only=False)), expected["boxes"])
    assert np.array_equal(np.stack(faces.column("landmarks").to_numpy(zero_copy_only=False)), expected["keypoints"])
    assert np.array_equal(faces.column("score").to_numpy(), expected["scores"])
    assert faces.column("error").null_count == 3
    empty = table.slice(3).to_pylist()
    for row in empty:
        assert row["box"] is None and row["score"] is None and row["landmarks"] is None and row["embedding"] is None
    assert empty[0]["error"] is None
    assert empty[1]["error"] == outputs[3]["error"] and "cannot decode image" in empty[1]["error"]
    assert rows_metadata(table) == METADATA


def test_file_round_trip_keeps_values_and_metadata(images, outputs, tmp_path):
    table = face_rows(list(images.values()), outputs, metadata=METADATA)
    path = write_face_rows(table, tmp_path / "rows.parquet")
    back = read_face_rows(path)
    assert back.equals(table) and rows_metadata(back) == METADATA
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]  # no temporary sibling left


def test_folder_of_shards_resume_set_and_refusals(images, outputs, tmp_path):
    sources = list(images.values())
    first = write_shard(face_rows(sources[:2], outputs[:2], metadata=METADATA), tmp_path / "rows")
    second = write_shard(face_rows(sources[2:], outputs[2:], metadata=METADATA), tmp_path / "rows")
    assert first != second and first.name.startswith("part-") and first.suffix == ".parquet"
    # a half-written shard (what an interrupted atomic write leaves: a hidden temporary sibling) is never taken as done
    (tmp_path / "rows" / ".part-0.parquet.facemask-tmp-0123456789ab.parquet").write_bytes(first.read_bytes()[:100])
    assert done_sources(tmp_path / "rows") == set(sources)
    rows = read_face_rows(tmp_path / "rows")
    assert sorted(rows.column("source").to_pylist()) == sorted([sources[0]] * 2 + sources[1:])
    assert rows_metadata(rows) == METADATA

    other = {**METADATA, "contract_sha256": "c" * 64}
    write_shard(face_rows(["x.jpg"], [outputs[2]], metadata=other), tmp_path / "rows")
    with pytest.raises(FaceRowsError, match="another model, embedding contract or precision"):
        read_face_rows(tmp_path / "rows")
    with pytest.raises(FaceRowsError, match="another model"):
        done_sources(tmp_path / "rows", METADATA)

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FaceRowsError, match="not a face rows folder.*notes.txt"):
        read_face_rows(tmp_path / "mine")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceRowsError, match="holds no shards"):
        read_face_rows(tmp_path / "empty")
    pq.write_table(pa.table({"source": ["a"], "embedding": [[0.0]]}), tmp_path / "foreign.parquet")
    with pytest.raises(FaceRowsError, match="not a face-rows Parquet file"):
        read_face_rows(tmp_path / "foreign.parquet")
    bare = face_rows(sources[:1], outputs[:1])  # no metadata: not a run's output
    pq.write_table(bare, tmp_path / "bare.parquet")
    with pytest.raises(FaceRowsError, match="no facemask metadata"):
        read_face_rows(tmp_path / "bare.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(FaceRowsError, match="cannot read face rows .*text.parquet"):
        read_face_rows(tmp_path / "text.parquet")
    with pytest.raises(FaceRowsError, match="one pipeline output per source"):
        face_rows(sources, outputs[:1])


def test_cli_parquet_file_holds_what_the_npz_holds(model_dir, images, tmp_path):
    args = ["embed", images["group"], images["portrait"], images["blank"], images["corrupt"], "--model",
            str(model_dir), "--device", "cpu", "--all-faces"]
    assert main([*args, "--out", str(tmp_path / "e.npz")]) == 1  # the corrupt image
    assert main([*args, "--out", str(tmp_path / "e.parquet")]) == 1
    npz = np.load(tmp_path / "e.npz", allow_pickle=False)
    rows = read_face_rows(tmp_path / "e.parquet")
    faces = rows.filter(pa.compute.greater_equal(rows.column("face_index"), 0))
    assert np.array_equal(np.stack(faces.column("embedding").to_numpy(zero_copy_only=False)), npz["embeddings"])
    assert np.array_equal(np.stack(faces.column("box").to_numpy(zero_copy_only=False)), npz["boxes"])
    assert faces.column("source").to_pylist() == list(npz["images"][npz["face_image"]])
    assert json.loads(str(npz["metadata"]))["contract_sha256"] == rows_metadata(rows)["contract_sha256"]
    assert json.loads(rows.schema.metadata[METADATA_KEY])["weights"] == json.loads(str(npz["metadata"]))["weights"]


def test_cli_folder_resumes_and_refuses_another_contract(model_dir, images, tmp_path, capsys):
    out = tmp_path / "rows"
    args = ["embed", *images.values(), "--model", str(model_dir), "--device", "cpu", "--out", str(out)]
    assert main([*args, "--shard-size", "2"]) == 1
    assert "4 image(s) embedded, 0 already in" in capsys.readouterr().out
    shards = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(shards) == 2
    assert main(args) == 0  # nothing left to do: the corrupt image's error row is already there
    assert "0 image(s) embedded, 4 already in" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == shards
    assert main([*args, "--det-max-side", "320"]) == 2  # another embedding contract
    assert "another model, embedding contract or precision" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == shards


def test_drop_error_rows_rewrites_only_the_shards_concerned(images, outputs, tmp_path):
    sources = list(images.values())  # group, portrait, blank (no face: not an error), corrupt (error row)
    keep = write_shard(face_rows(sources[:2], outputs[:2], metadata=METADATA), tmp_path / "rows")
    mixed = write_shard(face_rows(sources[2:], outputs[2:], metadata=METADATA), tmp_path / "rows")
    only_error = write_shard(face_rows(["gone.jpg"], [outputs[3]], metadata=METADATA), tmp_path / "rows")
    before = keep.read_bytes()
    assert drop_error_rows(tmp_path / "rows", ["x.jpg"]) == []  # no error row of these sources: nothing changes
    assert sorted(drop_error_rows(tmp_path / "rows", [*sources, "gone.jpg"])) == sorted([images["corrupt"], "gone.jpg"])
    assert keep.read_bytes() == before and not only_error.exists()  # an all-error shard is removed
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == sorted([keep.name, mixed.name])  # no temporaries
    left = read_face_rows(mixed)
    assert left.column("source").to_pylist() == [images["blank"]] and rows_metadata(left) == METADATA
    assert done_sources(tmp_path / "rows") == set(sources[:3])
    assert drop_error_rows(tmp_path / "rows", sources) == []


def test_cli_retry_errors_embeds_the_failed_images_again(model_dir, images, tmp_path, capsys):
    out = tmp_path / "rows"
    broken = tmp_path / "later_fixed.jpg"
    broken.write_bytes(Path(images["corrupt"]).read_bytes())
    args = ["embed", images["portrait"], str(broken), "--model", str(model_dir), "--device", "cpu", "--out", str(out)]
    assert main(args) == 1
    capsys.readouterr()
    broken.write_bytes(Path(images["group"]).read_bytes())  # the user replaces the bad file
    assert main(args) == 0  # a plain rerun skips it: its error row counts as done
    assert "0 image(s) embedded, 2 already in" in capsys.readouterr().out
    assert main([*args, "--retry-errors"]) == 0
    captured = capsys.readouterr()
    assert "1 error row(s) removed" in captured.err and "1 image(s) embedded, 1 already in" in captured.out
    rows = read_face_rows(out)
    assert rows.column("error").null_count == rows.num_rows
    assert sorted(set(rows.column("source").to_pylist())) == sorted([images["portrait"], str(broken)])
    assert main([*args[:-2], "--out", str(tmp_path / "e.npz"), "--retry-errors"]) == 2
    assert "--retry-errors applies to a rows folder" in capsys.readouterr().err


def test_cli_usage_errors(model_dir, images, tmp_path, capsys):
    base = ["embed", images["portrait"], "--model", str(model_dir), "--device", "cpu"]
    assert main([*base, "--ray", "--out", str(tmp_path / "e.npz")]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main([*base, "--ray"]) == 2
    assert main([*base, "--workers", "2", "--out", str(tmp_path / "rows")]) == 2
    assert "need --ray" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main([*base, "--out", str(tmp_path / "mine")]) == 2
    assert "not a face rows folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and len(list((tmp_path / "mine").iterdir())) == 1
