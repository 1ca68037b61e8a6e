"""What every command shares: ``--json`` prints one JSON document and nothing else on stdout, ``--json-out FILE``
writes it (checked like every output; the old ``--json FILE`` still works, with a warning), optional extras are
checked before any work, ``env`` lists every extra, an error line keeps its end (the fix), and ``identify`` ends with
a summary line as ``embed`` does."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.cli.exit_codes import NEGATIVE_RESULT, SUCCESS, USAGE_ERROR

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def files(tmp_path_factory, portraits, small_model_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("conventions")
    for name in ("person_a_1", "person_a_2", "person_b_1"):
        image = cv2.imread(str(portraits[name]))
        scale = 360 / max(image.shape[:2])
        cv2.imwrite(str(root / f"{name}.jpg"), cv2.resize(image, None, fx=scale, fy=scale))
    cv2.imwrite(str(root / "blank.png"), np.full((160, 200, 3), 128, np.uint8))
    for identity, name in (("person_a", "person_a_1"), ("person_b", "person_b_1")):
        (root / "people" / identity).mkdir(parents=True)
        shutil.copy(root / f"{name}.jpg", root / "people" / identity / f"{name}.jpg")
    a1, a2, b1 = (str(root / f"{n}.jpg") for n in ("person_a_1", "person_a_2", "person_b_1"))
    (root / "pairs.csv").write_text(f"image_a,image_b,same\n{a1},{a2},1\n{a1},{b1},0\n{a2},{root / 'blank.png'},0\n")
    (root / "images").mkdir()
    shutil.copy(a1, root / "images" / "a.jpg")
    paths = {"a1": a1, "a2": a2, "b1": b1, "blank": str(root / "blank.png"), "people": str(root / "people"),
             "pairs": str(root / "pairs.csv"), "model": str(small_model_dir), "root": str(root)}
    model = ["--model", paths["model"], "--device", "cpu"]
    assert main(["gallery", "build", paths["people"], "--out", str(root / "G"), *model, "--no-progress"]) == SUCCESS
    assert main(["regress", "create", *model, "--images", str(root / "images"), "--out", str(root / "ref.npz")]) == 0
    paths.update(G=str(root / "G"), ref=str(root / "ref.npz"))
    return paths


def _commands(files: dict[str, str], tmp: Path) -> dict[str, list[str]]:
    """Every command with --json, ready to run (a fresh gallery for the ones that change it)."""
    model = ["--model", files["model"], "--device", "cpu"]
    return {
        "compare": ["compare", files["a1"], files["a2"], *model],
        "env": ["env", "--device", "cpu"],
        "evaluate": ["evaluate", "--pairs", files["pairs"], *model, "--no-progress"],
        "evaluate 1:N": ["evaluate", "--gallery", files["G"], "--probes", files["people"], "--device", "cpu",
                         "--no-progress"],
        "gallery build": ["gallery", "build", files["people"], "--out", str(tmp / "G2"), *model, "--no-progress"],
        "gallery add": ["gallery", "add", str(shutil.copytree(files["G"], tmp / "G3")), files["people"], "--device",
                        "cpu", "--no-progress"],
        "gallery info": ["gallery", "info", files["G"]],
        "identify": ["identify", files["a2"], files["blank"], "--gallery", files["G"], "--device", "cpu"],
        "regress check": ["regress", "check", *model, "--reference", files["ref"]],
    }


COMMANDS = ["compare", "env", "evaluate", "evaluate 1:N", "gallery build", "gallery add", "gallery info", "identify",
            "regress check"]


@pytest.mark.parametrize("name", COMMANDS)
def test_json_prints_one_document_and_json_out_writes_the_same(name, files, tmp_path, capsys):
    args = _commands(files, tmp_path)[name]
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    assert code in (SUCCESS, NEGATIVE_RESULT), captured.err
    printed = json.loads(captured.out)  # the whole of stdout is one JSON document
    assert isinstance(printed, dict)
    again = _commands(files, tmp_path / "again")[name] if name.startswith("gallery") else args
    out = tmp_path / "out" / "result.json"
    assert main([*again, "--json-out", str(out)]) == code
    text = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written.keys() == printed.keys()
    assert f"-> {out}" in text or name == "compare"  # the text report as before, naming the file
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # atomic: no temporary left
    third = _commands(files, tmp_path / "third")[name] if name.startswith("gallery") else args
    assert main([*third, "--json-out", str(out)]) == USAGE_ERROR  # exists: --overwrite needed
    assert "pass --overwrite" in capsys.readouterr().err


def test_json_out_never_overwrites_an_input(files, tmp_path, capsys):
    copy = str(shutil.copy(files["a2"], tmp_path / "a2.jpg"))
    before = Path(copy).read_bytes()
    model = ["--model", files["model"], "--device", "cpu"]
    assert main(["compare", files["a1"], copy, *model, "--json-out", copy, "--overwrite"]) == USAGE_ERROR
    assert "is the input" in capsys.readouterr().err and Path(copy).read_bytes() == before
    assert main(["identify", copy, "--gallery", files["G"], "--device", "cpu", "--json-out",
                 str(Path(files["G"]) / "x.json")]) == USAGE_ERROR
    assert "is inside the gallery being read" in capsys.readouterr().err


def test_compare_json_reports_no_face_as_a_document(files, capsys):
    code = main(["compare", files["a1"], files["blank"], "--model", files["model"], "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == NEGATIVE_RESULT and result["same_person"] is None and result["similarity"] is None
    assert "no face found in" in result["error"] and result["score_b"] is None


@pytest.mark.parametrize("name", ["evaluate", "gallery build", "regress check"])
def test_old_json_file_form_still_writes_the_file_and_warns(name, files, tmp_path, capsys):
    args = _commands(files, tmp_path)[name]
    out = tmp_path / "old.json"
    assert main([*args, "--json", str(out)]) in (SUCCESS, NEGATIVE_RESULT)
    captured = capsys.readouterr()
    assert f"WARNING: --json FILE is deprecated: use --json-out {out}" in captured.err
    assert json.loads(out.read_text()) and f"-> {out}" in captured.out  # the text report, as before
    assert main([*args, "--json", str(out), "--json-out", str(tmp_path / "new.json")]) == USAGE_ERROR


def test_the_json_help_says_what_changed(capsys):
    assert main(["evaluate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--json-out FILE" in text and "Deprecated: `--json FILE`" in text


def test_a_missing_extra_is_refused_before_any_work(files, tmp_path, monkeypatch, capsys):
    import modelscope_facemask.tools.gallery.enrolment_sources as sources

    def no_work(*args, **kwargs):
        raise AssertionError("embedded images although an extra is missing")

    monkeypatch.setattr(sources, "embed_images", no_work)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` fails as if not installed
    model = ["--model", files["model"], "--device", "cpu"]
    for args in (["gallery", "build", files["people"], "--out", str(tmp_path / "G"), *model, "--no-progress"],
                 ["gallery", "add", files["G"], files["people"], *model, "--no-progress"],
                 ["identify", files["a1"], "--gallery", files["G"], "--device", "cpu"],
                 ["evaluate", "--gallery", files["G"], "--probes", files["people"], "--device", "cpu"]):
        assert main(args) == USAGE_ERROR
        (line,) = capsys.readouterr().err.splitlines()
        assert line.endswith("faiss is not installed (needed for the face gallery): "
                             "pip install 'modelscope-facemask[gallery]'"), line
    assert not (tmp_path / "G").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["embed", files["a1"], *model, "--out", str(tmp_path / "rows.parquet")]) == USAGE_ERROR
    assert capsys.readouterr().err.rstrip().endswith("pip install 'modelscope-facemask[ray]'")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["compare", files["a1"], files["a2"], *model, "--engine", "onnxruntime"]) == USAGE_ERROR
    assert capsys.readouterr().err.rstrip().endswith("pip install 'modelscope-facemask[onnx]'")


def test_env_lists_every_extra_installed_or_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert main(["env", "--device", "cpu"]) == SUCCESS
    out = capsys.readouterr().out
    for package in ("onnxruntime", "openvino", "faiss-cpu", "pyarrow", "ray", "huggingface-hub"):
        assert any(line.strip().startswith(package) for line in out.splitlines()), package
    (faiss,) = [line for line in out.splitlines() if line.strip().startswith("faiss-cpu")]
    assert "MISSING" in faiss and faiss.endswith("pip install 'modelscope-facemask[gallery]'")
    assert main(["env", "--device", "cpu", "--json"]) == SUCCESS
    extras = {entry["package"]: entry for entry in json.loads(capsys.readouterr().out)["extras"]}
    assert set(extras) == {"onnxruntime", "openvino", "faiss-cpu", "pyarrow", "ray", "huggingface-hub", "fastapi",
                           "uvicorn", "prometheus-client", "python-multipart"}
    assert extras["faiss-cpu"]["version"] is None and extras["pyarrow"]["version"]
    assert extras["pyarrow"]["extras"] == ["gallery", "ray"]


def test_a_long_error_line_keeps_its_end(monkeypatch, capsys):
    import modelscope_facemask.cli.env as env
    from modelscope_facemask.cli.common import UsageError

    def long_error(*args, **kwargs):
        raise UsageError("what failed: " + "detail " * 300 + "\nwhat to do: pass --model DIR")

    monkeypatch.setattr(env, "collect", long_error)
    assert main(["env"]) == USAGE_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("facemask env: error: what failed: detail") and " [...] " in line
    assert line.endswith("what to do: pass --model DIR") and len(line) < 1050


def test_identify_ends_with_a_summary_line(files, capsys):
    args = ["identify", files["a2"], files["blank"], "--gallery", files["G"], "--device", "cpu"]
    assert main([*args, "--threshold", "-1"]) == NEGATIVE_RESULT
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (f"2 image(s), 1 face(s): 1 identified, 0 unknown; 1 without a face, 0 unreadable; gallery "
                    f"{files['G']}, on cpu")
    assert main([*args, "--threshold", "1", "--json"]) == NEGATIVE_RESULT
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout: the document only; the summary on stderr, as embed --out - does
    assert "1 face(s): 0 identified, 1 unknown; 1 without a face" in captured.err
