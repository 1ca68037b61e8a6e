"""The command line never overwrites a file it did not write (inputs, files inside galleries, rows and model folders,
existing files without --overwrite), and names printed as text cannot forge lines or terminal control sequences.
Real portraits through the real pipeline (small deterministic recognizer, real mobilenet0.25 detector)."""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.support.printable import printable, unsafe_characters

from .fixture_data import linked_copy

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

INJECTED = "line1\nline2 injected"  # an identity that would print as two lines


def _small(path: Path, out: Path, side: int = 360) -> Path:
    """A portrait scaled down to ``side`` px (longer side) for speed; still a real photo with a real face."""
    image = cv2.imread(str(path))
    scale = min(1.0, side / max(image.shape[:2]))
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image)
    return out


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: symlink target or sha256 of its bytes (folders as None)."""
    return {p.relative_to(root).as_posix(): (os.readlink(p) if p.is_symlink() else
                                             hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _model_args(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--device", "cpu"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, portraits) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    names = ("person_a_1", "person_b_1", "person_a_2")
    return {name: _small(portraits[name], folder / f"{name}.jpg") for name in names}


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, small_model_dir, photos) -> Path:
    """A gallery of the small model whose identities hold a newline, an ESC sequence and a bidi override (as an
    older version could enrol them: written through the library, which does not check names)."""
    from modelscope_facemask import FaceMaskPipeline
    from modelscope_facemask.tools.gallery import FaceGallery, GalleryModel

    pipeline = FaceMaskPipeline(str(small_model_dir), device="cpu")
    sources = [str(photos["person_a_1"]), str(photos["person_b_1"])]
    embeddings = np.concatenate([pipeline(s, max_faces=1)["img_embedding"] for s in sources])
    gallery = FaceGallery.build(embeddings, [INJECTED, "\x1b[2J\u202eevil"], sources,
                                model=GalleryModel.of_pipeline(pipeline, str(small_model_dir)), kind="exact")
    return gallery.save(tmp_path_factory.mktemp("galleries") / "G")


def test_printable_escapes_what_could_forge_text_and_keeps_the_rest():
    assert printable("a\nb\rc\td\x1b[31me\x00\x7f\x85") == "a\\nb\\rc\\td\\x1b[31me\\x00\\x7f\\x85"
    assert printable("x\u202ey\u2028z\u200b\U000e0001") == "x\\u202ey\\u2028z\\u200b\\U000e0001"
    for kept in ("person_a", "名字 Zoë", "a\u00a0b", "José María", "🙂", "a b"):
        assert printable(kept) == kept
    assert unsafe_characters("a\nb\tc\x1b\u202ed\u2028e\u200cf") == ["\n", "\t", "\x1b", "\u202e", "\u2028"]
    assert unsafe_characters("Zoë Müller-ضياء\u200c") == []  # ZWNJ belongs to Persian names


# -- item 5: outputs refused before any model loads, every file under the folder unchanged --------------------------

def _case_annotate_out_is_input(root, photos, model):
    image = shutil.copy(photos["person_a_1"], root / "photo.jpg")
    return ["annotate", image, "--out", image, *model], "is the input"


def _case_annotate_out_is_a_symlink_to_the_input(root, photos, model):
    image = shutil.copy(photos["person_a_1"], root / "photo.png")
    (root / "link.png").symlink_to(image)
    return ["annotate", image, "--out", str(root / "link.png"), "--overwrite", *model], "is the input"


def _case_annotate_out_is_a_hard_link_to_the_input(root, photos, model):
    image = shutil.copy(photos["person_a_1"], root / "photo.png")
    os.link(image, root / "other.png")
    return ["annotate", image, "--out", str(root / "other.png"), "--overwrite", *model], "is the input"


def _case_annotate_existing_out(root, photos, model):
    (root / "mine.png").write_bytes(b"not written by facemask")
    return ["annotate", str(photos["person_a_1"]), "--out", str(root / "mine.png"), *model], "pass --overwrite"


def _case_annotate_existing_masked_photo(root, photos, model):
    (root / "a_masked.png").write_bytes(b"mine")
    return ["annotate", str(photos["person_a_1"]), "--mask", "--out", str(root / "a.png"), *model], \
        "--out's masked photo"


def _case_embed_existing_jsonl(root, photos, model):
    (root / "precious.jsonl").write_text('{"mine": true}\n')
    return ["embed", str(photos["person_a_1"]), "--out", str(root / "precious.jsonl"), *model], "pass --overwrite"


def _case_embed_existing_npz(root, photos, model):
    (root / "x.npz").write_bytes(b"mine")
    return ["embed", str(photos["person_a_1"]), "--out", str(root / "x.npz"), *model], "exists"


def _case_embed_into_a_gallery(root, photos, model, gallery):
    return ["embed", str(photos["person_a_1"]), "--out", str(gallery / "extra.parquet"), *model], \
        "is inside a FaceMask gallery"


def _case_gallery_add_report_into_the_gallery(root, photos, model, gallery):
    (root / "more" / "person_c").mkdir(parents=True)
    shutil.copy(photos["person_a_2"], root / "more" / "person_c" / "c.jpg")
    return ["gallery", "add", str(gallery), str(root / "more"), "--json-out", str(gallery / "manifest.json"),
            "--no-progress", "--device", "cpu"], "is inside the gallery being written"


def _case_gallery_build_report_over_the_csv(root, photos, model):
    (root / "people.csv").write_text(f"path,identity\n{photos['person_a_1']},person_a\n")
    return ["gallery", "build", str(root / "people.csv"), "--out", str(root / "G"), "--json-out",
            str(root / "people.csv"), "--overwrite", "--no-progress", *model], "is the input"


def _case_gallery_build_existing_report(root, photos, model):
    (root / "people" / "person_a").mkdir(parents=True)
    shutil.copy(photos["person_a_1"], root / "people" / "person_a" / "a.jpg")
    (root / "report.json").write_text("{}")
    return ["gallery", "build", str(root / "people"), "--out", str(root / "G"), "--json-out", str(root / "report.json"),
            "--no-progress", *model], "pass --overwrite"


def _case_gallery_build_inside_its_source(root, photos, model):
    (root / "people" / "person_a").mkdir(parents=True)
    shutil.copy(photos["person_a_1"], root / "people" / "person_a" / "a.jpg")
    return ["gallery", "build", str(root / "people"), "--out", str(root / "people" / "G"), "--no-progress",
            *model], "overlap"


def _case_evaluate_json_over_the_pairs(root, photos, model):
    a, b = photos["person_a_1"], photos["person_b_1"]
    (root / "pairs.csv").write_text(f"image_a,image_b,same\n{a},{b},0\n{a},{a},1\n")
    return ["evaluate", "--pairs", str(root / "pairs.csv"), "--json-out", str(root / "pairs.csv"), "--overwrite",
            "--no-progress", *model], "is the input"


def _case_evaluate_json_over_an_image_of_the_pairs(root, photos, model):
    a, b = shutil.copy(photos["person_a_1"], root / "a.jpg"), shutil.copy(photos["person_b_1"], root / "b.jpg")
    (root / "pairs.csv").write_text(f"image_a,image_b,same\n{a},{b},0\n{a},{a},1\n")
    return ["evaluate", "--pairs", str(root / "pairs.csv"), "--json-out", a, "--overwrite", "--no-progress", *model], \
        "is the input"


def _case_evaluate_plot_and_json_the_same_file(root, photos, model):
    a, b = photos["person_a_1"], photos["person_b_1"]
    (root / "pairs.csv").write_text(f"image_a,image_b,same\n{a},{b},0\n{a},{a},1\n")
    pytest.importorskip("matplotlib")
    return ["evaluate", "--pairs", str(root / "pairs.csv"), "--json-out", str(root / "r.png"), "--plot",
            str(root / "r.png"), "--no-progress", *model], "name the same file"


def _case_evaluate_json_into_the_gallery(root, photos, model, gallery):
    (root / "probes" / "person_a").mkdir(parents=True)
    shutil.copy(photos["person_a_2"], root / "probes" / "person_a" / "a.jpg")
    return ["evaluate", "--gallery", str(gallery), "--probes", str(root / "probes"), "--json-out",
            str(gallery / "result.json"), "--no-progress", "--device", "cpu"], "is inside the gallery being read"


def _case_regress_create_over_an_image(root, photos, model):
    (root / "imgs").mkdir()
    image = shutil.copy(photos["person_a_1"], root / "imgs" / "a.jpg")
    return ["regress", "create", "--images", str(root / "imgs"), "--out", image, "--overwrite", *model], \
        "is the input"


def _case_regress_check_report_over_the_reference(root, photos, model):
    (root / "ref.npz").write_bytes(b"a reference")
    return ["regress", "check", "--reference", str(root / "ref.npz"), "--json-out", str(root / "ref.npz"),
            "--overwrite", *model], "is the input"


def _case_pack_into_the_detector_folder(root, photos, model, model_copy):
    detector = shutil.copytree(model_copy / "detector", root / "detector")
    return ["pack", "--model", str(model_copy), "--detector", detector, "--out", f"{detector}/packed"], \
        "the detector folder"


def _case_export_into_the_model_folder(root, photos, model, model_copy):
    pytest.importorskip("onnx")
    return ["export", "--format", "onnx", "--model", str(model_copy), "--out", str(model_copy / "engines")], \
        "the model folder"


CASES = {name[len("_case_"):]: case for name, case in list(globals().items()) if name.startswith("_case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_output_that_is_an_input_or_exists_is_refused_and_nothing_changes(name, tmp_path, photos, small_model_dir,
                                                                          gallery_dir, capsys):
    root = tmp_path / "work"
    root.mkdir()
    extra = {}
    case = CASES[name]
    wants = inspect.signature(case).parameters
    if "gallery" in wants:
        extra["gallery"] = Path(shutil.copytree(gallery_dir, root / "G_existing"))
    if "model_copy" in wants:
        extra["model_copy"] = linked_copy(small_model_dir, root / "model")  # weights hard-linked (only read)
    args, fragment = case(root, photos, _model_args(small_model_dir), **extra)
    before = _snapshot(root)
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert _snapshot(root) == before


# -- item 5: what annotate knows only after detection (its crops), and --overwrite --------------------------------

def test_annotate_never_replaces_a_crop_it_did_not_write(tmp_path, photos, small_model_dir, capsys):
    model = _model_args(small_model_dir)
    out, crop = tmp_path / "photo.png", tmp_path / "photo_face0.png"
    crop.write_bytes(b"my own picture")
    assert main(["annotate", str(photos["person_a_1"]), "--out", str(out), *model]) == 2
    err = capsys.readouterr().err
    assert f"--out's crop {str(crop)!r} already exists" in err and "pass --overwrite" in err
    assert crop.read_bytes() == b"my own picture" and not out.exists()  # refused before anything was written

    assert main(["annotate", str(photos["person_a_1"]), "--out", str(out), "--overwrite", *model]) == 0
    capsys.readouterr()
    assert cv2.imread(str(crop)).shape == (112, 112, 3) and cv2.imread(str(out)) is not None

    source = Path(shutil.copy(photos["person_a_1"], tmp_path / "p_face0.png"))  # the input is where a crop goes
    data = source.read_bytes()
    assert main(["annotate", str(source), "--out", str(tmp_path / "p.png"), "--overwrite", *model]) == 2
    assert "is the input" in capsys.readouterr().err and source.read_bytes() == data
    assert not (tmp_path / "p.png").exists()


def test_embed_overwrite_replaces_an_existing_file_and_appends_to_its_own_rows_folder(tmp_path, photos,
                                                                                      small_model_dir, capsys):
    model = _model_args(small_model_dir)
    out = tmp_path / "faces.jsonl"
    out.write_text("old\n")
    assert main(["embed", str(photos["person_a_1"]), "--out", str(out), "--overwrite", *model]) == 0
    assert json.loads(out.read_text())["image"] == str(photos["person_a_1"])
    rows = tmp_path / "rows"
    for name in ("person_a_1", "person_b_1"):  # the rows folder it wrote is appended to without --overwrite
        assert main(["embed", str(photos[name]), "--out", str(rows), "--no-progress", *model]) == 0
    assert "1 image(s) embedded, 0 already" in capsys.readouterr().out
    assert len(list(rows.glob("*.parquet"))) == 2


def test_gallery_report_into_the_gallery_is_refused_and_the_gallery_stays_readable(tmp_path, photos, gallery_dir,
                                                                                   capsys):
    from modelscope_facemask.tools.gallery import FaceGallery

    gallery = Path(shutil.copytree(gallery_dir, tmp_path / "G"))
    more = tmp_path / "more" / "person_c"
    more.mkdir(parents=True)
    shutil.copy(photos["person_a_2"], more / "c.jpg")
    code = main(["gallery", "add", str(gallery), str(more.parent), "--json-out", str(gallery / "manifest.json"),
                 "--no-progress", "--device", "cpu", "--overwrite"])
    assert code == 2 and "is inside the gallery being written" in capsys.readouterr().err
    assert len(FaceGallery.load(gallery)) == 2
    report = tmp_path / "report.json"
    assert main(["gallery", "add", str(gallery), str(more.parent), "--json-out", str(report), "--no-progress",
                 "--device", "cpu"]) == 0
    assert json.loads(report.read_text())["enrolled_images"] == 1 and len(FaceGallery.load(gallery)) == 3


# -- item 7: names cannot forge text output ----------------------------------------------------------------------

def _assert_unforged(out: str) -> None:
    assert not any(line.startswith("line2") for line in out.splitlines()), out
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out


def test_gallery_info_escapes_control_characters_in_identities(gallery_dir, capsys):
    assert main(["gallery", "info", str(gallery_dir), "--identities"]) == 0
    out = capsys.readouterr().out
    _assert_unforged(out)
    assert "  line1\\nline2 injected: 1 image(s)" in out.splitlines()
    assert "  \\x1b[2J\\u202eevil: 1 image(s)" in out.splitlines()
    assert main(["gallery", "info", str(gallery_dir), "--identities", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["identities"]) == {INJECTED, "\x1b[2J\u202eevil"}  # exact


def test_identify_text_output_escapes_identities(gallery_dir, photos, capsys):
    assert main(["identify", str(photos["person_a_1"]), "--gallery", str(gallery_dir), "--threshold", "-1",
                 "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    _assert_unforged(out)
    assert "line1\\nline2 injected" in out and "\\x1b[2J\\u202eevil" in out
    assert main(["identify", str(photos["person_a_1"]), "--gallery", str(gallery_dir), "--threshold", "-1",
                 "--device", "cpu", "--json"]) == 0
    face = json.loads(capsys.readouterr().out)["images"][0]["faces"][0]
    assert {c["identity"] for c in face["candidates"]} == {INJECTED, "\x1b[2J\u202eevil"}


@pytest.mark.parametrize("identity", ["bad\nname", "tab\there", "esc\x1b[31m", "\u202eevil", "cr\rx"])
@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_new_identities_with_control_characters_are_refused_at_enrolment(identity, layout, tmp_path, photos,
                                                                         small_model_dir, capsys):
    if layout == "folder":
        (tmp_path / "people" / identity).mkdir(parents=True)
        shutil.copy(photos["person_a_1"], tmp_path / "people" / identity / "a.jpg")
        source = tmp_path / "people"
    else:
        source = tmp_path / "people.csv"
        with source.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["path", "identity"], [str(photos["person_a_1"]), identity]])
    code = main(["gallery", "build", str(source), "--out", str(tmp_path / "G"), "--no-progress",
                 *_model_args(small_model_dir)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"identity '{printable(identity)}'" in err and "control character" in err
    assert "\x1b" not in err and "\u202e" not in err and "\r" not in err
    assert not (tmp_path / "G").exists()


def test_embed_escapes_file_names_in_its_summary_and_warnings(tmp_path, photos, small_model_dir, capsys):
    broken = tmp_path / "bad\nname.jpg"  # an unreadable file whose name holds a newline and an ESC sequence
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    ansi = Path(shutil.copy(photos["person_a_1"], tmp_path / "\x1b[2Jok\u202e.jpg"))
    assert main(["embed", str(broken), str(ansi), *_model_args(small_model_dir)]) == 1
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert not any(line.startswith("name.jpg") for line in text.splitlines()), text
        assert "\x1b" not in text and "\u202e" not in text
    assert f"{tmp_path}/bad\\nname.jpg: ERROR" in captured.out
    assert f"{tmp_path}/\\x1b[2Jok\\u202e.jpg: 1 face(s)" in captured.out
