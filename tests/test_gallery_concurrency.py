"""A gallery changed by several real processes at once: concurrent writers keep every enrolment (writer lock),
readers during writes see the old gallery or the new one, a writer killed with SIGKILL leaves nothing that the next
writer does not remove, a live writer's lock is waited for (bounded) and its files are left alone.

Workers are processes of a forkserver (the package is imported once, in the server); they call the command line's
``main`` in-process or the library, and start each round together at a barrier so that their writes overlap."""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.errors import GalleryLockError
from modelscope_facemask.tools.gallery import FaceGallery
from modelscope_facemask.tools.gallery.gallery_folder import MANIFEST_FILE, read_manifest, writer_lock
from modelscope_facemask.tools.gallery.writer_lock import LOCK_FILE, TIMEOUT_ENV

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

DIM = 16
METADATA = {"model": "test/concurrency", "weights": {"recognizer": {"sha256": "a" * 64}},
            "contract": {"crop_size": 112, "max_faces": 1}}
ROOT = str(Path(__file__).resolve().parents[1])
WAIT_S = 120  # generous bound on every wait for a worker (never reached when things work)


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["modelscope_facemask.cli", "modelscope_facemask.cli.gallery",
                                    "modelscope_facemask.tools.gallery.face_gallery", "tests.test_gallery_concurrency"])
    return context


@pytest.fixture
def context(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the forkserver, should it start now, imports this checkout
    return _context()


def _face_rows(path: Path, sources: list[str], seed: int) -> str:
    """Face rows (one face per image) of random unit embeddings, with the metadata of one fake model."""
    from modelscope_facemask.tools.corpus.face_rows import face_rows, write_face_rows

    rng = np.random.default_rng(seed)
    outputs = []
    for _ in sources:
        embedding = rng.normal(size=(1, DIM)).astype(np.float32)
        outputs.append({"scores": np.ones(1, np.float32), "boxes": np.array([[0, 0, 10, 10]], np.float32),
                        "keypoints": np.zeros((1, 10), np.float32),
                        "img_embedding": embedding / np.linalg.norm(embedding)})
    return str(write_face_rows(face_rows(sources, outputs, metadata=METADATA), path))


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def _gallery(tmp_path: Path, images: int) -> Path:
    rows = _face_rows(tmp_path / "base" / "person" / "rows.parquet",
                      [f"/photos/base/{i}.jpg" for i in range(images)], 0)
    code, text = _cli("gallery", "build", rows, "--out", str(tmp_path / "G"), "--no-progress")
    assert code == 0, text
    return tmp_path / "G"


# ------------------------------------------------------------------------------------------------ workers
def _adding_worker(gallery: str, rows: list[str], barrier, results) -> None:
    """``facemask gallery add G ROWS`` once per round, each round started together with the other workers."""
    answers = []
    for path in rows:
        barrier.wait(WAIT_S)
        answers.append(_cli("gallery", "add", gallery, path, "--no-progress"))
    results.put(answers)


def _rewriting_worker(gallery: str, rounds: int, started, done) -> None:
    """Alternately enrol one extra image and remove it again, ``rounds`` times, as the command line does (lock held
    around load, change, save)."""
    extra = np.zeros((1, DIM), np.float32)
    extra[0, 0] = 1.0
    for round_ in range(rounds):
        with writer_lock(gallery):
            loaded = FaceGallery.load(gallery)
            if round_ % 2 == 0:
                loaded.add(extra, ["extra"], ["/photos/extra/1.jpg"])
            else:
                loaded.remove(["extra"])
            loaded.save(gallery, replace=True)
        started.set()
    done.set()


def _reading_worker(gallery: str, started, done, results) -> None:
    """Load the gallery again and again while the rewriting worker runs; report sizes seen and errors."""
    started.wait(WAIT_S)
    sizes, errors = set(), []
    for _ in range(2000):
        if done.is_set():
            break
        try:
            sizes.add(len(FaceGallery.load(gallery)))
        except Exception as exc:  # noqa: BLE001 - every failure is what this test counts
            errors.append(f"{type(exc).__name__}: {exc}")
    results.put((sorted(sizes), errors))


def _write_then_hang(gallery: str, inside) -> None:
    """Start rewriting the gallery and stop for ever halfway (the index written, the table not yet)."""
    import time

    from modelscope_facemask.tools.gallery import gallery_folder

    def hang(path, rows):
        inside.set()
        while True:
            time.sleep(1)

    gallery_folder._write_rows = hang
    loaded = FaceGallery.load(gallery)
    loaded.save(gallery, replace=True)


def _hold_the_lock(gallery: str, holding, release) -> None:
    with writer_lock(gallery) as folder:
        (folder / "gen-000099-0123abcd").mkdir()  # a live writer's generation, not yet switched to
        holding.set()
        release.wait(WAIT_S)


# ------------------------------------------------------------------------------------------------ tests
def test_concurrent_adds_keep_every_enrolment(tmp_path, context):
    """4 processes x 3 rounds of `gallery add`, each round started at once: all 12 images acknowledged are kept."""
    gallery = _gallery(tmp_path, 2)
    workers, rounds = 4, 3
    rows = [[_face_rows(tmp_path / f"w{w}r{r}" / f"person{w}_{r}" / "rows.parquet", [f"/photos/p{w}_{r}/1.jpg"],
                        1 + w * rounds + r) for r in range(rounds)] for w in range(workers)]
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_adding_worker, args=(str(gallery), rows[w], barrier, results))
                 for w in range(workers)]
    for process in processes:
        process.start()
    answers = [answer for _ in processes for answer in results.get(timeout=WAIT_S)]
    for process in processes:
        process.join(WAIT_S)
    assert all(code == 0 and "1 image(s) added" in text for code, text in answers), answers
    loaded = FaceGallery.load(gallery)
    expected = {f"/photos/base/{i}.jpg" for i in range(2)} | {f"/photos/p{w}_{r}/1.jpg" for w in range(workers)
                                                               for r in range(rounds)}
    assert loaded.enrolled_sources() == expected and len(loaded) == 2 + workers * rounds
    assert len(set(loaded.rows.ids.tolist())) == len(loaded) and loaded.next_id == len(loaded)
    generations = [p.name for p in gallery.iterdir() if p.name.startswith("gen-")]
    assert generations == [read_manifest(gallery).generation]  # every older generation removed


def test_readers_during_writes_see_the_old_gallery_or_the_new_one(tmp_path, context):
    gallery = _gallery(tmp_path, 50)
    started, done, results = context.Event(), context.Event(), context.Queue()
    writer = context.Process(target=_rewriting_worker, args=(str(gallery), 60, started, done))
    reader = context.Process(target=_reading_worker, args=(str(gallery), started, done, results))
    writer.start()
    reader.start()
    sizes, errors = results.get(timeout=WAIT_S * 3)
    writer.join(WAIT_S)
    reader.join(WAIT_S)
    assert writer.exitcode == 0 and errors == []
    assert sizes and set(sizes) <= {50, 51}
    assert len(FaceGallery.load(gallery)) == 50  # 60 rounds: the last one removed the extra image


def test_a_writer_killed_mid_write_leaves_the_gallery_and_its_leftovers_go_with_the_next_write(tmp_path, context):
    gallery = _gallery(tmp_path, 20)
    old_style = tmp_path / ".G.facemask-tmp-0123456789ab"  # what a killed writer of an earlier version left
    old_style.mkdir()
    for name in ("index.faiss", "rows.parquet", MANIFEST_FILE):
        (old_style / name).write_bytes(b"partial")
    strangers = tmp_path / ".G.facemask-tmp-notmine"  # not gallery files: never removed
    strangers.mkdir()
    (strangers / "notes.txt").write_text("keep me")
    before = (gallery / MANIFEST_FILE).read_bytes()
    inside = context.Event()
    writer = context.Process(target=_write_then_hang, args=(str(gallery), inside))
    writer.start()
    assert inside.wait(WAIT_S)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(WAIT_S)
    assert writer.exitcode == -signal.SIGKILL
    loaded = FaceGallery.load(gallery)  # the old gallery, complete
    assert (gallery / MANIFEST_FILE).read_bytes() == before and len(loaded) == 20
    loaded.save(gallery, replace=True)  # takes the lock the dead writer held, removes what it left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".G.")) == [strangers.name]
    generation = json.loads((gallery / MANIFEST_FILE).read_text())["generation"]
    assert generation.startswith("gen-000002-")  # the second write that completed
    assert sorted(p.name for p in gallery.iterdir()) == sorted([MANIFEST_FILE, LOCK_FILE, generation])
    assert (strangers / "notes.txt").read_text() == "keep me" and len(FaceGallery.load(gallery)) == 20


def test_a_live_writer_is_waited_for_and_its_files_are_left_alone(tmp_path, context, monkeypatch):
    gallery = _gallery(tmp_path, 3)
    holding, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_the_lock, args=(str(gallery), holding, release))
    holder.start()
    try:
        assert holding.wait(WAIT_S)
        monkeypatch.setenv(TIMEOUT_ENV, "0.2")
        manifest = (gallery / MANIFEST_FILE).read_bytes()
        with pytest.raises(GalleryLockError, match=rf"is being changed by process {holder.pid} .*waited 0.2 s"):
            FaceGallery.load(gallery).save(gallery, replace=True)
        code, text = _cli("gallery", "remove", str(gallery), "base")
        assert code == 2 and f"process {holder.pid}" in text and "Nothing was changed" in text
        assert (gallery / MANIFEST_FILE).read_bytes() == manifest and (gallery / "gen-000099-0123abcd").is_dir()
    finally:
        release.set()
        holder.join(WAIT_S)
    monkeypatch.setenv(TIMEOUT_ENV, "30")
    code, text = _cli("gallery", "remove", str(gallery), "base")
    assert code == 0 and "removed 3 image(s)" in text, text
    assert not (gallery / "gen-000099-0123abcd").exists()  # its writer is gone: a leftover now, removed
