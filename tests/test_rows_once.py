"""Each photo once: a rows folder written by ``facemask embed --out DIR`` holds one image's rows once, whatever path
named it (relative, absolute, an older version's relative rows) and however many runs write it at the same time
(a second run is refused, single-process or ``--ray``); gallery sources enrol a repeated photo once and refuse it
under two identities; the model check comes before anything changes on the Ray path too; rows record the model
folder as an absolute path; dangling symlinks and FIFOs in an input folder become error rows. Real portraits, the
small deterministic recognizer and the real mobilenet0.25 detector; concurrency with a real second process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.tools.corpus.face_rows import face_rows, read_face_rows, rows_metadata, write_shard

pytest.importorskip("faiss")

REPO = Path(__file__).resolve().parents[1]
LAYOUT = {"alice": ["person_a_1", "person_a_2"], "bob": ["person_b_1", "person_b_2"], "carol": ["impostor_1"]}


def _small(path, side: int = 240):
    image = cv2.imread(str(path))
    scale = min(1.0, side / max(image.shape[:2]))
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def model(small_model_dir) -> str:
    return str(small_model_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, portraits) -> Path:
    """``enrol/IDENTITY/NAME.jpg``: five small portraits of three identities."""
    root = tmp_path_factory.mktemp("photos") / "enrol"
    for identity, names in LAYOUT.items():
        (root / identity).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / identity / f"{name}.jpg"), _small(portraits[name]))
    return root


def _embed(*args: str) -> list[str]:
    return ["embed", *args, "--device", "cpu", "--no-progress"]


def _sources(rows: Path) -> list[str]:
    return read_face_rows(rows, columns=["source"]).column("source").to_pylist()


def test_relative_then_absolute_run_skips_every_photo(model, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(photos.parent)
    rows = tmp_path / "rows"
    assert main(_embed("enrol", "--model", model, "--out", str(rows))) == 0
    assert "5 image(s) embedded, 0 already in" in capsys.readouterr().out
    assert main(_embed(str(photos), "enrol/alice", "--model", model, "--out", str(rows))) == 0
    assert "0 image(s) embedded, 5 already in" in capsys.readouterr().out
    sources = _sources(rows)
    assert len(sources) == 5 and sorted(sources) == sorted(str(p) for p in photos.rglob("*.jpg"))
    assert all(p.name.startswith("part-") for p in rows.iterdir())  # the lock file is gone after the run

    # A folder written by an older version stored the relative paths as typed: read the same way.
    old = tmp_path / "old"
    table = read_face_rows(rows)
    relative = [os.path.relpath(s, photos.parent) for s in table.column("source").to_pylist()]
    write_shard(table.set_column(0, "source", pa.array(relative, pa.string())), old)
    assert main(_embed(str(photos), "--model", model, "--out", str(old))) == 0
    assert "0 image(s) embedded, 5 already in" in capsys.readouterr().out

    # ... and a gallery built from such rows (an older run repeated the photos under absolute paths) enrols each once
    first = table.column("source")[0].as_py()  # stored as relative[0] in the old folder
    write_shard(face_rows([first], [_one_face(table, first)], metadata=rows_metadata(table)), old)
    assert main(["gallery", "build", str(old), "--out", str(tmp_path / "G")]) == 1
    out = capsys.readouterr().out
    assert "5 image(s) of 3 identities enrolled, 1 not enrolled" in out and "(the same photo" in out


def _one_face(table, source: str) -> dict:
    row = next(r for r in table.to_pylist() if r["source"] == source and r["face_index"] == 0)
    return {"scores": np.array([row["score"]]), "boxes": np.array([row["box"]]),
            "keypoints": np.array([row["landmarks"]]), "img_embedding": np.array([row["embedding"]])}


PAUSED_EMBED = """
import pathlib, sys, time
import modelscope_facemask.tools.corpus.face_rows as face_rows
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
write_shard = face_rows.write_shard
def paused(table, folder):  # the run has read the folder and embedded its first shard: hold it there
    ready.touch()
    for _ in range(3000):  # bounded: at most about 5 minutes
        if go.exists():
            break
        time.sleep(0.1)
    return write_shard(table, folder)
face_rows.write_shard = paused
from modelscope_facemask.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_a_second_run_into_the_same_folder_is_refused(model, photos, tmp_path, capsys):
    """Run A (a real process) stops just before writing its first shard; run B, single-process then --ray, into
    the same folder is refused before it changes anything; A then finishes: every photo once."""
    rows, ready, go = tmp_path / "rows", tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", PAUSED_EMBED, str(ready), str(go),
                              *_embed(str(photos), "--model", model, "--out", str(rows))],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):  # bounded wait for A to reach the pause (it loads torch and the model first)
            if ready.exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), first.communicate()
        assert main(_embed(str(photos), "--model", model, "--out", str(rows))) == 2
        err = capsys.readouterr().err
        assert "is being written by another facemask embed run (process" in err and "another --out folder" in err
        assert main(_embed(str(photos), "--model", model, "--out", str(rows), "--ray", "--workers", "1")) == 2
        assert "is being written by another facemask embed run" in capsys.readouterr().err
        assert not list(rows.glob("part-*"))
    finally:
        go.touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "5 image(s) embedded, 0 already in" in out
    sources = _sources(rows)
    assert len(sources) == len(set(sources)) == 5
    assert main(_embed(str(photos), "--model", model, "--out", str(rows))) == 0  # released: the rerun may write
    assert "0 image(s) embedded, 5 already in" in capsys.readouterr().out


def _csv(path: Path, lines: list[tuple[str, str]]) -> Path:
    path.write_text("path,identity\n" + "".join(f"{p},{i}\n" for p, i in lines), encoding="utf-8")
    return path


def test_a_photo_listed_twice_in_a_csv_is_enrolled_once_or_refused(model, photos, tmp_path, capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    alice, bob = photos / "alice" / "person_a_1.jpg", photos / "bob" / "person_b_1.jpg"
    twice = _csv(photos.parent / "twice.csv", [("enrol/alice/person_a_1.jpg", "alice"),
                                                (str(alice), "alice"), ("enrol/bob/person_b_1.jpg", "bob")])
    gallery = tmp_path / "G"
    assert main(["gallery", "build", str(twice), "--out", str(gallery), "--model", model, "--device", "cpu",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "2 image(s) of 2 identities enrolled, 1 not enrolled" in out
    assert f"not enrolled {alice}: line 3 repeats line 2 (the same photo, identity 'alice'): enrolled once" in out
    assert sorted(FaceGallery.load(gallery).rows.sources.tolist()) == [str(alice), str(bob)]

    clash = _csv(tmp_path / "clash.csv", [(str(alice), "alice"), (str(alice), "alice"), (str(alice), "bob")])
    assert main(["gallery", "build", str(clash), "--out", str(tmp_path / "G2"), "--model", model, "--device", "cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "line 2 ('alice') and line 4 ('bob') are the same photo" in err and "under two identities" in err
    assert not (tmp_path / "G2").exists()
    assert main(["gallery", "add", str(gallery), str(clash), "--device", "cpu", "--no-progress"]) == 2
    assert "under two identities" in capsys.readouterr().err
    assert len(FaceGallery.load(gallery)) == 2


def test_ray_checks_the_model_before_nothing_to_do_and_before_retry_errors(model, photos, mixed_images, tmp_path,
                                                                           capsys):
    rows = tmp_path / "rows"
    sources = [str(photos / "alice" / "person_a_1.jpg"), str(mixed_images["corrupt"])]
    assert main(_embed(*sources, "--model", model, "--out", str(rows))) == 1  # the corrupt JPEG's error row
    capsys.readouterr()
    shards = {p.name: p.read_bytes() for p in rows.iterdir()}
    other = ["--det-max-side", "320", "--ray", "--workers", "1"]  # another embedding contract
    assert main(_embed(*sources, "--model", model, "--out", str(rows), *other)) == 2  # all done, yet refused
    captured = capsys.readouterr()
    assert "another model, embedding contract or precision" in captured.err and "nothing to do" not in captured.out
    assert main(_embed(*sources, "--model", model, "--out", str(rows), *other, "--retry-errors")) == 2
    assert "another model, embedding contract or precision" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in rows.iterdir()} == shards  # the error row is still there


def test_rows_and_their_gallery_record_the_model_folder_as_an_absolute_path(small_model_dir, photos, tmp_path,
                                                                            monkeypatch, capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    monkeypatch.chdir(small_model_dir.parent)
    rows = tmp_path / "rows"
    assert main(_embed(str(photos), "--model", small_model_dir.name, "--out", str(rows))) == 0
    assert rows_metadata(read_face_rows(rows))["model"] == str(small_model_dir)
    assert main(["gallery", "build", str(rows), "--out", str(tmp_path / "G")]) == 0
    capsys.readouterr()
    assert FaceGallery.load(tmp_path / "G").model.model == str(small_model_dir)
    monkeypatch.chdir(tmp_path)  # identify from another folder uses the recorded folder, not the hub
    assert main(["identify", str(photos / "bob" / "person_b_2.jpg"), "--gallery", str(tmp_path / "G"),
                 "--device", "cpu"]) == 0
    assert "bob" in capsys.readouterr().out


def test_dangling_symlinks_and_fifos_in_a_folder_become_error_rows(model, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "dave").mkdir(parents=True)
    cv2.imwrite(str(folder / "dave" / "ok.jpg"), cv2.imread(str(photos / "carol" / "impostor_1.jpg")))
    (folder / "dave" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(folder / "dave" / "pipe.png")
    rows = tmp_path / "rows"
    assert main(_embed(str(folder), "--model", model, "--out", str(rows))) == 1  # never blocks on the FIFO
    assert "3 image(s) embedded, 0 already in" in capsys.readouterr().out
    table = read_face_rows(rows)
    errors = {Path(r["source"]).name: r["error"] for r in table.to_pylist() if r["error"] is not None}
    assert sorted(errors) == ["gone.jpg", "pipe.png"]
    assert "No such file or directory" in errors["gone.jpg"] and "not a regular file" in errors["pipe.png"]
    assert main(["gallery", "build", str(folder), "--out", str(tmp_path / "G"), "--model", model, "--device", "cpu",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "1 image(s) of 1 identity enrolled, 2 not enrolled" in out
    assert f"not enrolled {folder / 'dave' / 'pipe.png'}: cannot read image file" in out
