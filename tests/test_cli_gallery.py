"""`facemask gallery`, `facemask identify` and `facemask evaluate --gallery` on the real portraits through the real
pipeline (small deterministic recognizer, real mobilenet0.25 detector); expected values from independent runs of
the pipeline and brute-force numpy."""
from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.cli import main

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

ENROLLED = {"person_a": ["person_a_1"], "person_b": ["person_b_1"], "impostor_1": ["impostor_1"]}
PROBES = {"person_a": ["person_a_2"], "person_b": ["person_b_2"], "impostor_2": ["impostor_2"]}


def _small(path, side: int = 360) -> np.ndarray:
    """A portrait scaled down to ``side`` px (longer side) for speed; still a real photo with a real face."""
    image = cv2.imread(str(path))
    scale = min(1.0, side / max(image.shape[:2]))
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _tree(root: Path, layout: dict[str, list[str]], portraits) -> Path:
    for identity, names in layout.items():
        (root / identity).mkdir(parents=True, exist_ok=True)
        for name in names:
            cv2.imwrite(str(root / identity / f"{name}.jpg"), _small(portraits[name]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


@pytest.fixture(scope="module")
def model(small_model_dir) -> str:
    return str(small_model_dir)


@pytest.fixture(scope="module")
def pipeline(model) -> FaceMaskPipeline:
    return FaceMaskPipeline(model, device="cpu")


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory, portraits) -> Path:
    root = _tree(tmp_path_factory.mktemp("enrol") / "people", ENROLLED, portraits)
    cv2.imwrite(str(root / "person_b" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))  # no face
    (root / "person_a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, enrolment, model) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("galleries") / "G"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["gallery", "build", str(enrolment), "--out", str(out), "--model", model, "--device", "cpu",
                     "--no-progress"])
    return out, code, buffer.getvalue()


@pytest.fixture(scope="module")
def probes(tmp_path_factory, portraits) -> Path:
    return _tree(tmp_path_factory.mktemp("probes") / "probes", PROBES, portraits)


def _embedding(pipeline, source) -> np.ndarray:
    return pipeline(source, max_faces=1)["img_embedding"][0]


def _json_out(capsys, args) -> tuple[int, dict]:
    code = main(args)
    return code, json.loads(capsys.readouterr().out)


def test_help(capsys):
    for command in (["gallery"], ["gallery", "build"], ["gallery", "add"], ["gallery", "remove"], ["gallery", "info"],
                    ["identify"]):
        assert main([*command, "--help"]) == 0
        assert f"usage: facemask {' '.join(command)}" in capsys.readouterr().out


def test_build_enrols_the_largest_face_of_each_image_and_reports_the_rest(built, enrolment, pipeline):
    from modelscope_facemask.tools.gallery import FaceGallery

    folder, code, out = built
    assert code == 1  # two images could not be enrolled; the gallery holds the others
    assert f"not enrolled {enrolment / 'person_b' / 'blank.png'}: no face found" in out
    assert f"not enrolled {enrolment / 'person_a' / 'broken.jpg'}: " in out
    assert "3 image(s) of 3 identities enrolled, 2 not enrolled; exact index" in out
    gallery = FaceGallery.load(folder)
    assert gallery.identities() == ["impostor_1", "person_a", "person_b"]
    for source, embedding in zip(gallery.rows.sources, gallery.rows.embeddings):
        assert np.allclose(embedding, _embedding(pipeline, source), atol=1e-6)
    manifest = json.loads((folder / "manifest.json").read_text())
    weights = Path(pipeline.model.weights_file).read_bytes()
    assert manifest["recognizer_sha256"] == hashlib.sha256(weights).hexdigest()
    assert manifest["contract"]["max_faces"] == 1 and manifest["counts"] == {"images": 3, "identities": 3}


def test_info(built, capsys):
    folder = built[0]
    code, info = _json_out(capsys, ["gallery", "info", str(folder), "--identities", "--json"])
    assert code == 0 and info["identities"] == {"impostor_1": 1, "person_a": 1, "person_b": 1}
    assert info["index_kind"] == "exact" and info["counts"]["images"] == 3
    assert main(["gallery", "info", str(folder)]) == 0
    assert f"embedding contract sha256 {info['contract_sha256']}" in capsys.readouterr().out


def test_identify_every_face_with_its_top_k(built, model, pipeline, portraits, tmp_path, capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    a = _small(portraits["person_a_2"])
    b = _small(portraits["impostor_2"])
    b = cv2.resize(b, (int(b.shape[1] * a.shape[0] * 0.6 / b.shape[0]), int(a.shape[0] * 0.6)))
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1] + 40, 3), 255, np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] + 40 :] = b
    group = tmp_path / "group.png"
    cv2.imwrite(str(group), canvas)
    single = tmp_path / "person_b_2.jpg"
    cv2.imwrite(str(single), _small(portraits["person_b_2"]))
    images = [str(group), str(single)]
    code, result = _json_out(capsys, ["identify", *images, "--gallery", str(built[0]), "--top-k", "2",
                                      "--threshold", "0.1", "--device", "cpu", "--json"])
    assert code == 0 and result["threshold"] == 0.1 and result["model"] == model
    gallery = FaceGallery.load(built[0])
    names = gallery.rows.identities.astype(str)
    outputs = pipeline(images, max_faces=None)
    assert [len(r["faces"]) for r in result["images"]] == [len(o["scores"]) for o in outputs] and \
        len(result["images"][0]["faces"]) == 2
    for record, output in zip(result["images"], outputs):
        for face, embedding, box in zip(record["faces"], output["img_embedding"], output["boxes"]):
            scores = gallery.rows.embeddings.astype(np.float64) @ embedding.astype(np.float64)
            best = sorted(((float(scores[names == n].max()), n) for n in set(names)), key=lambda t: (-t[0], t[1]))
            assert [c["identity"] for c in face["candidates"]] == [n for _, n in best[:2]]
            assert [c["similarity"] for c in face["candidates"]] == pytest.approx([s for s, _ in best[:2]], abs=1e-5)
            assert face["similarity"] == face["candidates"][0]["similarity"]
            assert face["identity"] == (best[0][1] if best[0][0] >= 0.1 else None)
            assert face["box"] == pytest.approx(box.tolist())
            # `score` is kept one release as a deprecated alias: det_score on a face, similarity on a candidate
            assert face["score"] == face["det_score"] and 0 < face["det_score"] <= 1
            assert all(c["score"] == c["similarity"] for c in face["candidates"])
    assert main(["identify", str(single), "--gallery", str(built[0]), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "1 face(s)" in captured.out and "    1. " in captured.out and "    5. " not in captured.out
    assert "default threshold 0.4 is an uncalibrated placeholder" in captured.err


def test_identify_reports_bad_images_and_goes_on(built, enrolment, probes, capsys):
    code, result = _json_out(capsys, ["identify", str(enrolment / "person_b" / "blank.png"),
                                      str(enrolment / "person_a" / "broken.jpg"),
                                      str(probes / "impostor_2" / "impostor_2.jpg"),
                                      "--gallery", str(built[0]), "--device", "cpu", "--json"])
    assert code == 1
    first, second, third = result["images"]
    assert first["error"] == "no face found" and first["faces"] == []
    assert "broken.jpg" in second["error"] and len(third["faces"]) == 1 and "error" not in third


def test_another_contract_is_refused(built, probes, capsys):
    code = main(["identify", str(probes / "person_a" / "person_a_2.jpg"), "--gallery", str(built[0]), "--device", "cpu",
                 "--det-max-side", "640"])
    err = capsys.readouterr().err
    manifest = json.loads((built[0] / "manifest.json").read_text())
    assert code == 2 and "embedding contract sha256" in err and manifest["contract_sha256"][:16] in err
    assert "differs in detection_settings" in err and "rebuild the gallery" in err


def test_add_and_remove(built, portraits, tmp_path, capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    folder = tmp_path / "G"
    shutil.copytree(built[0], folder)
    more = _tree(tmp_path / "more", {"impostor_2": ["impostor_2"], "person_a": ["person_a_2"]}, portraits)
    assert main(["gallery", "add", str(folder), str(more), "--device", "cpu", "--no-progress"]) == 0
    assert "2 image(s) added (1 new identity), 0 already enrolled, 0 not enrolled; now 5 image(s) of 4 identities" \
        in capsys.readouterr().out
    assert main(["gallery", "add", str(folder), str(more), "--device", "cpu", "--no-progress"]) == 0
    assert "0 image(s) added (0 new identities), 2 already enrolled" in capsys.readouterr().out
    manifest = (folder / "manifest.json").read_bytes()
    assert main(["gallery", "remove", str(folder), "person_a", "nobody"]) == 2
    assert "not in the gallery: 'nobody'; nothing was removed" in capsys.readouterr().err
    assert (folder / "manifest.json").read_bytes() == manifest
    assert main(["gallery", "remove", str(folder), "person_a"]) == 0
    assert "removed 2 image(s) of 1 identity (person_a); now 3 image(s) of 3 identities" in capsys.readouterr().out
    gallery = FaceGallery.load(folder)
    assert gallery.identities() == ["impostor_1", "impostor_2", "person_b"] and gallery.next_id == 5


def test_build_refuses_to_overwrite(built, enrolment, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["gallery", "build", str(enrolment), "--out", str(tmp_path / "taken"), "--device", "cpu"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["gallery", "build", str(enrolment), "--out", str(tmp_path / "x"), "--index", "nope"]) == 2
    assert "--index 'nope': choose one of auto, exact" in capsys.readouterr().err


def _mated_rank_rates(probe_embeddings, probe_identities, gallery):
    """Brute force: each probe's per-identity best score over all images, the rank of its mate (ties by name)."""
    names = gallery.rows.identities.astype(str)
    labels = sorted(set(names))
    ranks = []
    for embedding, identity in zip(probe_embeddings, probe_identities):
        if identity not in labels:
            continue
        scores = gallery.rows.embeddings.astype(np.float64) @ embedding.astype(np.float64)
        per = {n: scores[names == n].max() for n in labels}
        ranks.append(1 + sum(per[n] > per[identity] or (per[n] == per[identity] and n < identity) for n in labels))
    return {k: float(np.mean(np.array(ranks) <= k)) for k in (1, 5)}


def test_evaluate_gallery_rank_rates(built, probes, pipeline, tmp_path, capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    result_file = tmp_path / "eval.json"
    assert main(["evaluate", "--gallery", str(built[0]), "--probes", str(probes), "--device", "cpu", "--no-progress",
                 "--json-out", str(result_file)]) == 0
    out = capsys.readouterr().out
    sources = [probes / i / f"{n}.jpg" for i, names in PROBES.items() for n in names]
    expected = _mated_rank_rates([_embedding(pipeline, str(s)) for s in sources], list(PROBES),
                                 FaceGallery.load(built[0]))
    assert "probes: 3 (2 mated, 1 non-mated; 0 without a usable face)" in out
    assert f"rank-1 identification rate: {expected[1]:.4f}" in out and "rank-5 identification rate: 1.0000" in out
    assert "TPIR @ FPIR 0.01: n/a (needs at least 100 non-mated probes, have 1)" in out
    saved = json.loads(result_file.read_text())["identification"]
    assert saved["rank_rates"]["1"] == pytest.approx(expected[1]) and saved["mated_probes"] == 2


def test_evaluate_masked_probes_matches_an_independent_masking(built, probes, pipeline,
                                                                                   tmp_path, capsys):
    from modelscope_facemask.faces.images import load_image
    from modelscope_facemask.tools.gallery import FaceGallery
    from modelscope_facemask.tools.masks import draw_masks

    result_file = tmp_path / "masked.json"
    assert main(["evaluate", "--gallery", str(built[0]), "--probes", str(probes), "--mask-probes", "--device",
                 "cpu", "--no-progress", "--json-out", str(result_file)]) == 0
    assert "probes (masked probes): 3 (2 mated, 1 non-mated; 0 without a usable face)" in capsys.readouterr().out
    result = json.loads(result_file.read_text())
    assert result["mask_probes"] is True
    embeddings = []
    for identity, names in PROBES.items():
        for name in names:
            path = str(probes / identity / f"{name}.jpg")
            landmarks = pipeline(path, max_faces=1)["keypoints"][:1]
            masked = draw_masks(load_image(path), landmarks, seed=zlib.crc32(f"{identity}/{name}.jpg".encode()))
            output = pipeline(np.ascontiguousarray(masked[:, :, ::-1]), max_faces=1)
            embeddings.append(output["img_embedding"][0])
            assert 1 - float(np.dot(embeddings[-1], _embedding(pipeline, path))) > 1e-4  # the mask changed the face
    expected = _mated_rank_rates(embeddings, list(PROBES), FaceGallery.load(built[0]))
    assert result["identification"]["rank_rates"]["1"] == pytest.approx(expected[1])


def test_evaluate_usage_errors(built, probes, capsys):
    assert main(["evaluate", "--gallery", str(built[0])]) == 2
    assert "needs both --gallery G and --probes SRC" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "give --pairs PAIRS.csv (1:1 verification) or --gallery G --probes SRC" in capsys.readouterr().err
    assert main(["evaluate", "--gallery", str(probes), "--probes", str(probes)]) == 2
    assert "is not a FaceMask gallery (no manifest.json)" in capsys.readouterr().err


def test_build_from_parquet_face_rows_without_embedding_twice(built, enrolment, pipeline, model, tmp_path, capsys):
    """Face rows of every face (max_faces=None) -> the largest face per image; same contract as an image build."""
    from modelscope_facemask.tools.corpus.face_rows import face_rows, write_face_rows
    from modelscope_facemask.tools.gallery import FaceGallery
    from modelscope_facemask.tools.regress import run_metadata

    sources = sorted(str(p) for p in enrolment.rglob("*") if p.is_file())
    outputs = pipeline(sources, max_faces=None)
    table = face_rows(sources, outputs, metadata={"model": model, **run_metadata(pipeline, None)})
    rows = write_face_rows(table, tmp_path / "rows" / "faces.parquet")
    assert main(["gallery", "build", str(rows), "--out", str(tmp_path / "G2")]) == 1  # blank.png, broken.jpg
    out = capsys.readouterr().out
    assert "3 image(s) of 3 identities enrolled, 2 not enrolled" in out and "blank.png: no face" in out
    from_rows, from_images = FaceGallery.load(tmp_path / "G2"), FaceGallery.load(built[0])
    assert from_rows.model.contract_sha256 == from_images.model.contract_sha256
    assert from_rows.model.recognizer_sha256 == from_images.model.recognizer_sha256
    assert from_rows.rows.sources.tolist() == from_images.rows.sources.tolist()
    assert np.allclose(from_rows.rows.embeddings, from_images.rows.embeddings, atol=1e-5)
