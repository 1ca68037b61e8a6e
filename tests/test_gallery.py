"""FaceGallery: search and aggregation against brute-force numpy on crafted embeddings, incremental changes, the
on-disk folder (atomic, verified, refused when damaged or from another model), enrolment sources."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.errors import (
    EnrolmentSourceError,
    GalleryFormatError,
    GalleryIdentityError,
    GalleryMismatchError,
    OutputFolderError,
)
from modelscope_facemask.tools.gallery import FaceGallery, GalleryModel
from modelscope_facemask.tools.gallery.enrolment_sources import read_csv, read_folder_tree, read_source
from modelscope_facemask.tools.gallery.gallery_folder import (INDEX_FILE, MANIFEST_FILE, ROWS_FILE, data_folder,
                                                        read_manifest)
from modelscope_facemask.tools.gallery.writer_lock import LOCK_FILE

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

MODEL = GalleryModel("test/model", "a" * 64, "c" * 64, {"max_faces": 1, "crop_size": 112})


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(seed: int, identities: int, per_identity: int, dim: int = 64):
    """Unit embeddings shaped like faces: identity centres plus per-image noise (same-identity cosine ~0.6)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(identities, dim)))
    names = [f"person{j:02d}" for j in range(identities) for _ in range(per_identity)]
    owner = np.repeat(np.arange(identities), per_identity)
    vectors = _unit(centres[owner] + rng.normal(scale=1.2 / np.sqrt(dim), size=(len(owner), dim)))
    return vectors, names, centres


def _brute_force(queries, vectors, names, top_k, aggregate):
    """Per-identity scores over ALL images: max (best) or the cosine to the normalised mean embedding (mean)."""
    labels = sorted(set(names))
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    names = np.array(names)
    results = []
    for row in scores:
        if aggregate == "best":
            per = {n: row[names == n].max() for n in labels}
        else:
            per = {}
            for n in labels:
                mean = vectors[names == n].astype(np.float64).mean(axis=0)
                per[n] = float(queries[len(results)].astype(np.float64) @ (mean / np.linalg.norm(mean)))
        results.append(sorted(per.items(), key=lambda item: (-item[1], item[0]))[:top_k])
    return results


def _sources(names):
    return [f"/photos/{n}/{i}.jpg" for i, n in enumerate(names)]


@pytest.mark.parametrize("aggregate", ["best", "mean"])
def test_search_equals_brute_force(aggregate):
    vectors, names, centres = _clustered(0, identities=8, per_identity=5)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="exact")
    rng = np.random.default_rng(1)
    queries = _unit(centres[rng.integers(0, 8, 20)] + rng.normal(scale=0.15, size=(20, 64)))
    found = gallery.search(queries, top_k=5, aggregate=aggregate)
    expected = _brute_force(queries, vectors, names, 5, aggregate)
    for got, want in zip(found, expected):
        assert [c.identity for c in got] == [n for n, _ in want]
        assert [c.score for c in got] == pytest.approx([s for _, s in want], abs=1e-5)
        for candidate in got:  # the source shown is that identity's best-matching image
            assert f"/{candidate.identity}/" in candidate.source


def test_one_crowded_identity_still_yields_top_k_identities():
    """300 images of one identity sit closest to the query: more hits are fetched until 5 identities are found."""
    vectors, names, centres = _clustered(2, identities=6, per_identity=3)
    rng = np.random.default_rng(3)
    crowd = _unit(centres[0] + rng.normal(scale=0.02, size=(300, 64)))
    vectors = np.concatenate([vectors, crowd])
    names = names + ["crowd"] * 300
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="exact")
    (got,) = gallery.search(centres[:1], top_k=5)
    (want,) = _brute_force(centres[:1], vectors, names, 5, "best")
    assert [c.identity for c in got] == [n for n, _ in want] and len(got) == 5 and got[0].identity == "crowd"


def test_identify_answers_unknown_below_the_threshold():
    vectors, names, centres = _clustered(4, identities=4, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    (best,) = gallery.search(centres[2:3], top_k=1)
    known, unknown = gallery.identify(np.repeat(centres[2:3], 2, axis=0), top_k=3, threshold=best[0].score)
    assert known.identity == best[0].identity == "person02"
    (answer,) = gallery.identify(centres[2:3], threshold=best[0].score + 1e-4)
    assert answer.identity is None and answer.candidates[0].identity == "person02"
    assert len(unknown.candidates) == 3


def test_add_and_remove_match_a_rebuilt_gallery_and_ids_are_never_reused():
    vectors, names, centres = _clustered(5, identities=10, per_identity=4)
    gallery = FaceGallery.build(vectors[:20], names[:20], _sources(names)[:20], model=MODEL, kind="exact")
    added = gallery.add(vectors[20:], names[20:], _sources(names)[20:])
    assert added.tolist() == list(range(20, 40))
    assert gallery.remove(["person01", "person07"]) == 8
    more = gallery.add(vectors[4:8], names[4:8], ["/again/%d.jpg" % i for i in range(4)])
    assert more.tolist() == [40, 41, 42, 43]
    keep = [i for i, n in enumerate(names) if n not in ("person01", "person07")]
    rebuilt = FaceGallery.build(np.concatenate([vectors[keep], vectors[4:8]]),
                                [names[i] for i in keep] + names[4:8], [str(i) for i in range(len(keep) + 4)],
                                model=MODEL, kind="exact")
    assert gallery.identities() == rebuilt.identities() and "person01" in gallery.identities()
    assert len(gallery) == len(rebuilt) == 36
    queries = centres
    for aggregate in ("best", "mean"):
        for a, b in zip(gallery.search(queries, aggregate=aggregate), rebuilt.search(queries, aggregate=aggregate)):
            assert [c.identity for c in a] == [c.identity for c in b]
            assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-6)


def test_removing_an_unknown_identity_changes_nothing():
    vectors, names, _ = _clustered(6, identities=3, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    with pytest.raises(GalleryIdentityError, match="not in the gallery: 'nobody'; nothing was removed"):
        gallery.remove(["person00", "nobody"])
    assert len(gallery) == 6 and len(gallery.index) == 6 and "person00" in gallery.identities()


def test_save_and_load_round_trip(tmp_path):
    vectors, names, centres = _clustered(7, identities=5, per_identity=3)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    folder = gallery.save(tmp_path / "g")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted([manifest["generation"], MANIFEST_FILE, LOCK_FILE])
    assert sorted(p.name for p in (folder / manifest["generation"]).iterdir()) == [INDEX_FILE, ROWS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temporary sibling left behind
    assert manifest["recognizer_sha256"] == "a" * 64 and manifest["contract_sha256"] == "c" * 64
    assert manifest["counts"] == {"images": 15, "identities": 5} and manifest["format_version"] == 2
    loaded = FaceGallery.load(folder)
    assert np.array_equal(loaded.rows.embeddings, gallery.rows.embeddings)
    assert loaded.rows.identities.tolist() == names and loaded.next_id == 15 and loaded.model == MODEL
    for a, b in zip(loaded.search(centres), gallery.search(centres)):
        assert [(c.identity, c.source) for c in a] == [(c.identity, c.source) for c in b]


def test_existing_folders_are_never_overwritten_unless_they_are_galleries(tmp_path):
    vectors, names, _ = _clustered(8, identities=2, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    gallery.save(tmp_path / "g")
    with pytest.raises(OutputFolderError, match="already exists"):
        gallery.save(tmp_path / "g")
    gallery.remove(["person00"])
    gallery.save(tmp_path / "g", replace=True)
    assert len(FaceGallery.load(tmp_path / "g")) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="not a FaceMask gallery"):
        gallery.save(tmp_path / "mine", replace=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_write_leaves_the_old_gallery_intact(tmp_path, monkeypatch):
    vectors, names, _ = _clustered(9, identities=3, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    gallery.save(tmp_path / "g")
    gallery.remove(["person02"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("modelscope_facemask.tools.gallery.gallery_folder._write_rows", crash)
    with pytest.raises(OSError, match="disk full"):
        gallery.save(tmp_path / "g", replace=True)
    assert len(FaceGallery.load(tmp_path / "g")) == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["g"]


@pytest.mark.parametrize("damage", ["truncated rows", "missing index", "no manifest", "future version", "edited count"])
def test_damaged_galleries_are_refused(tmp_path, damage):
    vectors, names, _ = _clustered(10, identities=3, per_identity=2)
    folder = FaceGallery.build(vectors, names, _sources(names), model=MODEL).save(tmp_path / "g")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    files = data_folder(folder, read_manifest(folder))
    if damage == "truncated rows":
        data = (files / ROWS_FILE).read_bytes()
        (files / ROWS_FILE).write_bytes(data[: len(data) // 2])
        message = "rows.parquet does not match its manifest"
    elif damage == "missing index":
        (files / INDEX_FILE).unlink()
        message = "incomplete: index.faiss is missing"
    elif damage == "no manifest":
        (folder / MANIFEST_FILE).unlink()
        message = "is not a FaceMask gallery"
    elif damage == "future version":
        (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
        message = "format version 99"
    else:
        (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "counts": {"images": 5, "identities": 3}}))
        message = "manifest says 5"
    with pytest.raises(GalleryFormatError, match=message):
        FaceGallery.load(folder)


def test_another_model_or_contract_is_refused_naming_both_hashes():
    vectors, names, _ = _clustered(11, identities=2, per_identity=1)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    gallery.check_model(GalleryModel("another/name", "a" * 64, "c" * 64, {}))  # same hashes: accepted
    other = GalleryModel("other/model", "b" * 64, "d" * 64, {"max_faces": 1, "crop_size": 128})
    with pytest.raises(GalleryMismatchError) as info:
        gallery.check_model(other)
    message = str(info.value)
    assert "bbbbbbbbbbbbbbbb" in message and "aaaaaaaaaaaaaaaa" in message
    assert "dddddddddddddddd" in message and "cccccccccccccccc" in message and "differs in crop_size" in message
    assert "rebuild the gallery" in message


def test_bad_embeddings_are_refused():
    vectors, names, _ = _clustered(12, identities=2, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    with pytest.raises(ValueError, match="unit vectors"):
        gallery.add(vectors[:1] * 2, ["x"], ["x.jpg"])
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        gallery.search(np.ones((1, 32), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        gallery.search(np.full((1, 64), np.nan, np.float32))
    assert len(gallery) == 4


def test_folder_tree_and_csv_sources(tmp_path):
    for rel in ("alice/1.jpg", "alice/old/2.png", "bob/1.jpg", "loose.jpg", "bob/notes.txt", ".hidden/1.jpg"):
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(b"")
    tree = read_folder_tree(tmp_path / "tree")
    assert [(Path(i.source).relative_to(tmp_path / "tree").as_posix(), i.identity, i.key) for i in tree.images] == [
        ("alice/1.jpg", "alice", "alice/1.jpg"), ("alice/old/2.png", "alice", "alice/old/2.png"),
        ("bob/1.jpg", "bob", "bob/1.jpg")]
    assert [(Path(s).name, why) for s, why in tree.problems] == [
        ("loose.jpg", "not inside an identity folder (expected SRC/IDENTITY/image)")]
    csv = tmp_path / "list.csv"
    csv.write_text("Path,Identity,extra\nalice/1.jpg,Alice,x\n/abs/b.jpg,Bob,\n")
    listed = read_source(csv)
    assert [(i.source, i.identity) for i in listed.images] == [(str(tmp_path / "alice/1.jpg"), "Alice"),
                                                               ("/abs/b.jpg", "Bob")]
    csv.write_text("file,name\na.jpg,A\n")
    with pytest.raises(EnrolmentSourceError, match="missing column.*path, identity"):
        read_csv(csv)
    csv.write_text("path,identity\na.jpg,\n")
    with pytest.raises(EnrolmentSourceError, match=r"list.csv:2: empty path or identity"):
        read_csv(csv)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnrolmentSourceError, match="no images in identity folders"):
        read_source(tmp_path / "empty")
    with pytest.raises(EnrolmentSourceError, match="no such file or folder"):
        read_source(tmp_path / "missing")
    vectors, names, _ = _clustered(13, identities=2, per_identity=2)
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL).save(tmp_path / "G")
    with pytest.raises(EnrolmentSourceError, match=r"'.*G' is a gallery, not a source of images.*gallery add"):
        read_source(gallery)


def test_hnsw_gallery_finds_what_exact_search_finds_and_survives_removal_and_reload(tmp_path):
    vectors, names, centres = _clustered(13, identities=40, per_identity=5)
    exact = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="exact")
    graph = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="hnsw")
    assert graph.index.kind == "hnsw"
    for a, b in zip(exact.search(centres), graph.search(centres)):
        assert [c.identity for c in a] == [c.identity for c in b]
    graph.remove(["person00", "person01"])
    graph.save(tmp_path / "g")
    loaded = FaceGallery.load(tmp_path / "g")
    assert json.loads((tmp_path / "g" / MANIFEST_FILE).read_text())["index_kind"] == "hnsw"
    found = loaded.search(centres[:2], top_k=10)
    assert all(c.identity not in ("person00", "person01") for row in found for c in row)
    assert all(len(row) == 10 for row in found)


def test_mean_templates_summed_in_chunks_equal_brute_force(monkeypatch):
    """Chunks of 7 rows split identities across chunks; identities enrolled out of order."""
    monkeypatch.setattr("modelscope_facemask.tools.gallery.face_gallery._TEMPLATE_CHUNK", 7)
    vectors, names, centres = _clustered(14, identities=6, per_identity=5)
    shuffle = np.random.default_rng(15).permutation(len(names))
    vectors, names = vectors[shuffle], [names[i] for i in shuffle]
    gallery = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="exact")
    found = gallery.search(centres, top_k=6, aggregate="mean")
    for got, want in zip(found, _brute_force(centres, vectors, names, 6, "mean")):
        assert [c.identity for c in got] == [n for n, _ in want]
        assert [c.score for c in got] == pytest.approx([s for _, s in want], abs=1e-6)


def test_search_options_set_the_hnsw_breadth_and_the_search_method(capsys):
    import argparse

    from modelscope_facemask.cli import main
    from modelscope_facemask.cli.gallery import apply_search_options
    from modelscope_facemask.tools.gallery.vector_index import HNSW_EF_SEARCH, SEARCH_METHODS

    def options(ef_search=None, search="faiss"):
        return argparse.Namespace(ef_search=ef_search, search=search)

    vectors, names, _ = _clustered(13, identities=3, per_identity=2)
    hnsw = FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="hnsw")
    assert hnsw.index.ef_search == HNSW_EF_SEARCH == 256
    apply_search_options(hnsw, options())
    assert hnsw.index.ef_search == 256 and hnsw.index.search_method == "faiss"
    apply_search_options(hnsw, options(512))
    assert hnsw.index.ef_search == 512 and capsys.readouterr().err == ""
    apply_search_options(hnsw, options(64, "bf16"))
    assert hnsw.index.search_method == "bf16" and hnsw.index.ef_search == 512
    assert "--search bf16 scans every vector, so it is ignored" in capsys.readouterr().err
    exact = FaceGallery.build(vectors, names, _sources(names), model=MODEL)
    apply_search_options(exact, options(512))
    assert "this one is exact (recall 1), so it is ignored" in capsys.readouterr().err
    found = exact.search(vectors, top_k=2)
    apply_search_options(exact, options(search="bf16"))
    assert exact.index.search_method == "bf16"
    for got, want in zip(exact.search(vectors, top_k=2), found):
        assert [(c.identity, c.image_id) for c in got] == [(c.identity, c.image_id) for c in want]
        assert [c.score for c in got] == pytest.approx([c.score for c in want], abs=1e-6)
    for command in (["identify", "x.jpg", "--gallery", "G"], ["evaluate", "--gallery", "G", "--probes", "P"]):
        assert main([*command, "--ef-search", "0"]) == 2
        assert "--ef-search: must be a positive integer, got 0" in capsys.readouterr().err
        assert main([*command, "--search", "fp16"]) == 2
        err = capsys.readouterr().err
        assert "--search: invalid choice: 'fp16'" in err and all(m in err.split("choose from")[1] for m in SEARCH_METHODS)


def _saved(tmp_path, name="g"):
    vectors, names, _ = _clustered(16, identities=3, per_identity=2)
    return FaceGallery.build(vectors, names, _sources(names), model=MODEL, kind="exact").save(tmp_path / name)


@pytest.mark.parametrize("path, value, key", [
    (("embedding_dim",), "64", "embedding_dim"), (("embedding_dim",), -64, "embedding_dim"),
    (("embedding_dim",), 64.5, "embedding_dim"), (("embedding_dim",), True, "embedding_dim"),
    (("embedding_dim",), None, "embedding_dim"),
    (("next_id",), "6", "next_id"), (("next_id",), -1, "next_id"), (("next_id",), 2, "next_id"),
    (("counts",), [6, 3], "counts"), (("counts", "images"), "6", "counts.images"),
    (("counts", "identities"), None, "counts.identities"), (("counts", "identities"), 9, "counts"),
    (("files",), [], "files"), (("files", "index.faiss"), "abc", "files.index.faiss"),
    (("files", "index.faiss", "size"), "120", "files.index.faiss.size"),
    (("files", "rows.parquet", "sha256"), 12, "files.rows.parquet.sha256"),
    (("files", "notes.txt"), {"size": 1, "sha256": "0" * 64}, "files"),
    (("contract",), "crop_size=112", "contract"), (("contract",), [112], "contract"),
    (("index_kind",), "ivf", "index_kind"), (("index_kind",), 3, "index_kind"),
    (("recognizer_sha256",), 123, "recognizer_sha256"), (("contract_sha256",), "abc", "contract_sha256"),
    (("detector_sha256",), 5, "detector_sha256"), (("model",), ["test/model"], "model"),
    (("created",), 20261203, "created"), (("generation",), "../../elsewhere", "generation"),
    (("generation",), None, "generation"), (("format_version",), "2", "format_version"),
    (("format_version",), True, "format_version"),
])
def test_every_bad_manifest_value_is_a_format_error_naming_the_file_and_the_key(tmp_path, path, value, key):
    folder = _saved(tmp_path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    parent = manifest
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    for read in (FaceGallery.load, read_manifest):
        with pytest.raises(GalleryFormatError) as info:
            read(folder)
        assert f"{folder / MANIFEST_FILE}" in str(info.value) and f"'{key}'" in str(info.value)
        assert "rebuild" in str(info.value)


def test_a_missing_key_and_a_manifest_that_is_no_object_are_format_errors(tmp_path):
    folder = _saved(tmp_path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["contract_sha256"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(GalleryFormatError, match=r"manifest.json': key 'contract_sha256' is missing"):
        FaceGallery.load(folder)
    (folder / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(GalleryFormatError, match="is not a FaceMask gallery manifest"):
        FaceGallery.load(folder)


def test_a_gallery_reached_through_a_symlink_is_written_through_to_its_target(tmp_path):
    real = _saved(tmp_path, "real")
    link = tmp_path / "G"
    link.symlink_to(real, target_is_directory=True)
    gallery = FaceGallery.load(link)
    gallery.add(_unit(np.ones((1, 64))), ["newcomer"], ["/photos/newcomer/1.jpg"])
    gallery.save(link, replace=True)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(FaceGallery.load(real)) == 7 and "newcomer" in FaceGallery.load(link).identities()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G", "real"]


def test_a_format_1_gallery_is_read_and_its_next_write_converts_it(tmp_path):
    """Format 1 (earlier versions): the files directly in G and no generation in the manifest."""
    folder = _saved(tmp_path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in (INDEX_FILE, ROWS_FILE):
        (folder / manifest["generation"] / name).rename(folder / name)
    (folder / manifest["generation"]).rmdir()
    (folder / LOCK_FILE).unlink()
    del manifest["generation"]
    (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 1}))
    old = FaceGallery.load(folder)
    assert len(old) == 6 and read_manifest(folder).generation is None
    old.remove(["person00"])
    old.save(folder, replace=True)
    converted = read_manifest(folder)
    assert converted.format_version == 2 and converted.generation.startswith("gen-000001-")
    assert sorted(p.name for p in folder.iterdir()) == sorted([converted.generation, MANIFEST_FILE, LOCK_FILE])
    assert FaceGallery.load(folder).identities() == ["person01", "person02"]
    (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 1, "generation": "gen-000001-"
                                                    "0123abcd"}))
    with pytest.raises(GalleryFormatError, match="key 'generation' must be absent in a format 1 manifest"):
        read_manifest(folder)


def test_a_first_build_killed_before_its_manifest_is_completed_by_the_next_build(tmp_path):
    """What a killed first write leaves (the lock file, a half generation, a temporary manifest) is replaced by
    the next build even without replace; a folder with anything else in it is never written into."""
    folder = tmp_path / "g"
    (folder / "gen-000001-0123abcd").mkdir(parents=True)
    (folder / "gen-000001-0123abcd" / INDEX_FILE).write_bytes(b"half")
    (folder / LOCK_FILE).touch()
    (folder / ".manifest.json.facemask-tmp-0123456789ab.json").write_text("{")
    with pytest.raises(GalleryFormatError, match="is not a FaceMask gallery"):
        FaceGallery.load(folder)
    _saved(tmp_path)
    manifest = read_manifest(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([manifest.generation, MANIFEST_FILE, LOCK_FILE])
    assert len(FaceGallery.load(folder)) == 6
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / LOCK_FILE).touch()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="not a FaceMask gallery"):
        FaceGallery.load(folder).save(tmp_path / "mine", replace=True)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted([LOCK_FILE, "notes.txt"])


def test_a_bad_lock_timeout_is_a_configuration_error(tmp_path, monkeypatch):
    from modelscope_facemask.errors import ConfigurationError
    from modelscope_facemask.tools.gallery.writer_lock import TIMEOUT_ENV

    folder = _saved(tmp_path)
    for value in ("soon", "inf", "nan", "1e300", "-1"):  # inf and 1e300: OverflowError inside threading before
        monkeypatch.setenv(TIMEOUT_ENV, value)
        with pytest.raises(ConfigurationError, match=f"{TIMEOUT_ENV}='{value}'"):
            FaceGallery.load(folder).save(folder, replace=True)


def test_enrolled_photos_are_compared_by_resolved_path(tmp_path, monkeypatch):
    """Before: a gallery that stored 'enrol/a.jpg' (as typed, by earlier versions) did not know '/abs/enrol/a.jpg',
    nor the same photo through a symbolic link, and `gallery add` enrolled it a second time."""
    (tmp_path / "enrol").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "enrol" / name).write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "enrol")
    monkeypatch.chdir(tmp_path)
    vectors, names, _ = _clustered(0, 2, 1)
    gallery = FaceGallery.build(vectors, names, ["enrol/a.jpg", "https://example.org/b.jpg"], model=MODEL)
    asked = [str(tmp_path / "enrol" / "a.jpg"), str(tmp_path / "link" / "a.jpg"), "./enrol/../enrol/a.jpg",
             str(tmp_path / "enrol" / "b.jpg"), "https://example.org/b.jpg"]
    assert gallery.enrolled_photos(asked) == [True, True, True, False, True]


def test_dot_dot_through_a_symbolic_link_names_the_file_the_system_opens(tmp_path, monkeypatch):
    """``top/link/../x.jpg`` with ``link -> ../real/sub`` opens ``real/x.jpg``; removing ``..`` as text named
    ``top/x.jpg`` (another file, or none), so the wrong photo was enrolled or compared."""
    from modelscope_facemask.tools.corpus.face_rows import source_keys, source_name

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "x.jpg").write_bytes(b"real")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "link").symlink_to("../real/sub")
    monkeypatch.chdir(tmp_path)
    assert Path(source_name("top/link/../x.jpg")).read_bytes() == b"real"
    assert source_keys(["top/link/../x.jpg"]) == [str((tmp_path / "real" / "x.jpg").resolve())]
    csv_file = tmp_path / "top" / "enrol.csv"
    csv_file.write_text("path,identity\nlink/../x.jpg,alice\n")
    (image,) = read_csv(csv_file).images
    assert Path(image.source).read_bytes() == b"real"
