"""The `facemask` command line on the real portraits, with the small deterministic recognizer and the real
mobilenet0.25 detector. Most commands run in-process through ``main([...])``; a few run as real subprocesses
(``python -m modelscope_facemask.cli``) to check exit codes and stderr as a user sees them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np
import pytest

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.cli import main
from modelscope_facemask.cli.compare import DEFAULT_THRESHOLD
from modelscope_facemask.testing.hub_emulator import reset_hub_config

from .fixture_data import PORTRAIT_NAMES as NAMES

SUBCOMMANDS = [["embed"], ["compare"], ["annotate"], ["evaluate"], ["env"], ["regress"], ["regress", "create"],
               ["regress", "check"], ["pack"], ["publish"], ["demo"]]


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    return small_model_dir  # the regression model of tests/regression/inputs.py, shared: read only


@pytest.fixture(scope="module")
def pipeline(model_dir) -> FaceMaskPipeline:
    return FaceMaskPipeline(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def photos(portraits) -> dict[str, str]:
    return {name: str(path) for name, path in portraits.items()}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelscope_facemask.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _group(photos, tmp_path) -> str:
    """Two portraits side by side, the second scaled down: a two-face image."""
    a = cv2.imread(photos["person_a_2"])
    b = cv2.imread(photos["impostor_1"])
    b = cv2.resize(b, (int(b.shape[1] * a.shape[0] * 0.6 / b.shape[0]), int(a.shape[0] * 0.6)))
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1] + 40, 3), 255, np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] + 40 :] = b
    path = tmp_path / "group.png"
    cv2.imwrite(str(path), canvas)
    return str(path)


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_help_on_every_subcommand(command, capsys):
    assert main([*command, "--help"]) == 0
    assert f"usage: facemask {' '.join(command)}" in capsys.readouterr().out


def test_console_script_points_at_main():
    (script,) = entry_points(group="console_scripts", name="facemask")
    assert script.value == "modelscope_facemask.cli:main"
    assert script.load() is main


def test_usage_errors_exit_2(capsys, tmp_path):
    assert main(["compare", str(tmp_path / "missing.jpg"), str(tmp_path / "other.jpg"), "--model", "x"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["embed"]) == 2  # argparse: IMAGE_OR_DIR is required
    assert main(["embed", str(tmp_path), "--model", str(tmp_path / "nope")]) == 2  # empty folder
    assert "no images" in capsys.readouterr().err


def test_missing_model_folder_exit_2(photos, capsys):
    assert main(["compare", photos["person_a_1"], photos["person_a_2"], "--model", "./no-such-model"]) == 2
    assert "model folder './no-such-model' does not exist" in capsys.readouterr().err


def test_unreachable_hub_is_a_clear_usage_error(photos, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    reset_hub_config()
    try:
        assert main(["compare", photos["person_a_1"], photos["person_a_2"], "--model", "some-owner/some-model"]) == 2
    finally:
        reset_hub_config()
    (line,) = capsys.readouterr().err.splitlines()  # one line, cut nowhere, ending with the fix
    assert "hub is not reachable" in line and "`facemask demo`" in line and "[...]" not in line
    assert line.endswith("run `modelscope download some-owner/some-model --local-dir DIR`, copy DIR here and pass "
                         "--model DIR")


def test_compare_as_a_subprocess(model_dir, pipeline, photos):
    out_same = pipeline([photos["person_a_1"], photos["person_a_2"]])
    out_diff = pipeline([photos["person_a_1"], photos["impostor_1"]])
    for (a, b), (one, two) in (((photos["person_a_1"], photos["person_a_2"]), out_same),
                               ((photos["person_a_1"], photos["impostor_1"]), out_diff)):
        done = _cli("compare", a, b, "--model", str(model_dir), "--device", "cpu", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        expected = float(np.dot(one["img_embedding"][0].astype(np.float64), two["img_embedding"][0]))
        assert result["similarity"] == pytest.approx(expected, abs=1e-6)
        assert result["threshold"] == DEFAULT_THRESHOLD and result["threshold_calibrated"] is False
        assert result["same_person"] == (result["similarity"] >= DEFAULT_THRESHOLD)
    done = _cli("compare", photos["person_a_1"], "/no/such.jpg", "--model", str(model_dir))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no such file or folder: '/no/such.jpg'" in done.stderr


def test_compare_text_and_threshold(model_dir, photos, capsys):
    args = [photos["person_b_1"], photos["person_b_2"], "--model", str(model_dir), "--device", "cpu"]
    assert main(["compare", *args]) == 0
    out = capsys.readouterr().out
    assert "cosine similarity" in out and "uncalibrated placeholder" in out and "facemask evaluate" in out
    assert main(["compare", *args, "--threshold", "-1"]) == 0
    out = capsys.readouterr().out
    assert "same person" in out and "placeholder" not in out
    assert main(["compare", *args, "--threshold", "1"]) == 0
    assert "different people" in capsys.readouterr().out


@pytest.mark.parametrize("threshold", ["nan", "NaN", "inf", "-inf", "1.01", "-1.5", "abc", ""])
def test_compare_threshold_outside_the_cosine_range_is_a_usage_error(threshold, capsys, tmp_path):
    # before any file or model is touched: the images and the model do not exist
    assert main(["compare", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), f"--threshold={threshold}"]) == 2
    err = capsys.readouterr().err
    assert "argument --threshold: must be a number in [-1, 1]" in err and "Traceback" not in err


def test_compare_json_is_strict_json(model_dir, photos, capsys):
    assert main(["compare", photos["person_a_1"], photos["person_a_2"], "--model", str(model_dir), "--device", "cpu",
                 "--json", "--threshold", "-1"]) == 0
    text = capsys.readouterr().out
    result = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert result["threshold"] == -1.0 and result["same_person"] is True


def test_compare_without_a_face_exit_1(model_dir, photos, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert main(["compare", photos["person_a_1"], str(blank), "--model", str(model_dir), "--device", "cpu"]) == 1
    assert f"no face found in {blank}" in capsys.readouterr().out


def test_embed_npz_and_jsonl(model_dir, pipeline, photos, tmp_path):
    folder = Path(photos["person_a_1"]).parent
    assert main(["embed", str(folder), "--model", str(model_dir), "--device", "cpu", "--out", str(tmp_path / "e.npz"),
                 "--no-progress"]) == 0
    data = np.load(tmp_path / "e.npz", allow_pickle=False)
    images = list(data["images"])
    assert sorted(images) == sorted(photos.values())
    expected = pipeline(images)
    assert np.array_equal(data["face_counts"], [len(o["scores"]) for o in expected])
    assert np.array_equal(data["embeddings"], np.concatenate([o["img_embedding"] for o in expected]))
    assert np.array_equal(data["keypoints"], np.concatenate([o["keypoints"] for o in expected]))
    assert np.array_equal(data["face_image"], np.arange(6)) and set(data["errors"]) == {""}
    meta = json.loads(str(data["metadata"]))
    assert meta["device"] == "cpu" and meta["weights"]["recognizer"]["file"] == "pytorch_model.pt"
    assert len(meta["contract_sha256"]) == 64

    assert main(["embed", photos["person_a_1"], photos["impostor_2"], "--model", str(model_dir), "--device", "cpu",
                 "--out", str(tmp_path / "e.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == [photos["person_a_1"], photos["impostor_2"]]
    # the same batch as the command (the recognizer's CPU kernels may round differently for other batch sizes)
    for record, output in zip(records, pipeline([photos["person_a_1"], photos["impostor_2"]])):
        assert np.array_equal(np.float32(record["faces"][0]["embedding"]), output["img_embedding"][0])
        assert np.array_equal(np.float32(record["faces"][0]["keypoints"]), output["keypoints"][0])


def test_embed_all_faces_and_an_unreadable_image(model_dir, photos, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    group = _group(photos, tmp_path)
    args = ["embed", group, str(bad), "--model", str(model_dir), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "all.npz"), "--all-faces"]) == 1  # the unreadable image
    data = np.load(tmp_path / "all.npz", allow_pickle=False)
    assert list(data["face_counts"]) == [2, 0]
    assert data["errors"][0] == "" and "cannot decode image" in data["errors"][1]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{group}: 1 face(s)" in out and f"{bad}: ERROR" in out and "1 unreadable" in out
    assert main(["embed", group, "--model", str(model_dir), "--out", str(tmp_path / "x.txt")]) == 2


def test_annotate_writes_png_and_crops(model_dir, pipeline, photos, tmp_path, capsys):
    group = _group(photos, tmp_path)
    out = tmp_path / "annotated" / "group.png"
    assert main(["annotate", group, "--out", str(out), "--model", str(model_dir), "--device", "cpu"]) == 0
    drawn = cv2.imread(str(out))
    assert drawn.shape == cv2.imread(group).shape
    assert not np.array_equal(drawn, cv2.imread(group))
    prepared = pipeline.preprocessor.prepare([group], max_faces=None)[0]
    assert len(prepared) == 2
    for index, crop in enumerate(prepared.crops):
        written = cv2.imread(str(out.with_name(f"group_face{index}.png")))[:, :, ::-1]
        assert np.array_equal(written, crop)
    assert "2 face(s)" in capsys.readouterr().out
    assert main(["annotate", group, "--out", str(tmp_path / "one.png"), "--largest", "--model", str(model_dir),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "one_face0.png").is_file() and not (tmp_path / "one_face1.png").exists()


def test_evaluate_on_portrait_pairs(model_dir, pipeline, photos, tmp_path, capsys):
    from modelscope_facemask.tools.evaluate import evaluate_similarities

    folder = Path(photos["person_a_1"]).parent
    rows = [(a, b, int(a[:8] == b[:8] and a.startswith("person"))) for i, a in enumerate(NAMES) for b in NAMES[i + 1 :]]
    csv = tmp_path / "pairs.csv"
    csv.write_text("image_a,image_b,same\n" + "".join(f"{folder / a}.jpg,{folder / b}.jpg,{s}\n" for a, b, s in rows))
    assert main(["evaluate", "--pairs", str(csv), "--model", str(model_dir), "--device", "cpu", "--no-progress",
                 "--json-out", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    embedding = {name: o["img_embedding"][0] for name, o in zip(NAMES, pipeline([photos[n] for n in NAMES]))}
    expected = evaluate_similarities([float(np.dot(embedding[a].astype(np.float64), embedding[b])) for a, b, _ in rows],
                                     [bool(s) for *_, s in rows])
    assert expected.genuine_pairs == 2 and expected.impostor_pairs == 13
    assert f"ROC AUC: {expected.roc_auc:.4f}" in out
    assert f"EER: {expected.eer:.4f} at threshold {expected.eer_threshold:.4f}" in out
    assert "TAR @ FAR 0.01: n/a (needs at least 100 different-person pairs, have 13)" in out
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["evaluation"]["roc_auc"] == pytest.approx(expected.roc_auc) and saved["pairs_file"] == "pairs.csv"


def _portrait_pairs_csv(photos, tmp_path) -> tuple[Path, list[tuple[str, str, int]]]:
    folder = Path(photos["person_a_1"]).parent
    rows = [(a, b, int(a[:8] == b[:8] and a.startswith("person"))) for i, a in enumerate(NAMES) for b in NAMES[i + 1 :]]
    csv = tmp_path / "pairs.csv"
    csv.write_text("image_a,image_b,same\n" + "".join(f"{folder / a}.jpg,{folder / b}.jpg,{s}\n" for a, b, s in rows))
    return csv, rows


def test_evaluate_plot_without_matplotlib_is_refused_first(model_dir, photos, tmp_path, monkeypatch, capsys):
    """matplotlib made unimportable (whether or not it is installed): --plot is refused before any work, and
    no plot file appears; without --plot the same command runs."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises, find_spec() is None
    csv, _ = _portrait_pairs_csv(photos, tmp_path)
    plot = tmp_path / "roc.png"
    args = ["evaluate", "--pairs", str(csv), "--model", str(model_dir), "--device", "cpu", "--no-progress"]
    assert main([*args, "--plot", str(plot)]) == 2
    captured = capsys.readouterr()
    assert "--plot needs matplotlib, which is not installed" in captured.err and "ROC AUC" not in captured.out
    assert not plot.exists()
    assert main(args) == 0 and "ROC AUC" in capsys.readouterr().out


def test_evaluate_plot_draws_the_roc_curve(model_dir, photos, tmp_path, capsys):
    """With matplotlib installed: the real plot (skipped only when matplotlib is not installed)."""
    pytest.importorskip("matplotlib")
    csv, _ = _portrait_pairs_csv(photos, tmp_path)
    args = ["evaluate", "--pairs", str(csv), "--model", str(model_dir), "--device", "cpu", "--no-progress"]
    assert main([*args, "--plot", str(tmp_path / "roc.txt")]) == 2  # refused before any work
    captured = capsys.readouterr()
    assert "the file name must end in one of" in captured.err and ".png" in captured.err
    assert "ROC AUC" not in captured.out and not (tmp_path / "roc.txt").exists()
    plot = tmp_path / "plots" / "roc.png"
    assert main([*args, "--plot", str(plot)]) == 0
    assert f"ROC curve -> {plot}" in capsys.readouterr().out
    drawn = cv2.imread(str(plot))
    assert drawn is not None and drawn.shape == (540, 600, 3)  # figsize 5 x 4.5 in at 120 dpi
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 10  # a curve, labels and a legend, not a blank canvas
    assert [p.name for p in plot.parent.iterdir()] == ["roc.png"]  # no temporary file left behind


def test_evaluate_bad_pairs_file(tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text("left,right,label\n")
    assert main(["evaluate", "--pairs", str(csv)]) == 2
    assert "missing column(s) image_a, image_b, same" in capsys.readouterr().err
    assert main(["evaluate", "--pairs", str(tmp_path / "none.csv")]) == 2


def test_env(capsys):
    import torch

    assert main(["env", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "device: 'cpu' -> cpu; precision fp32" in out
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert info["versions"]["modelscope-facemask"] and "token_set" in info["hub"]


def test_demo_calls_run_demo_lazily(monkeypatch, tmp_path):
    import modelscope_facemask.tools.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out_dir, *, hub_timeout=5.0: calls.append((out_dir, hub_timeout)) or 7)
    assert main(["demo", "--out", str(tmp_path / "d"), "--hub-timeout", "0.5"]) == 7
    assert calls == [(tmp_path / "d", 0.5)]


def test_modelscope_and_hub_client_info_logs_only_with_verbose():
    """ModelScope's hub client logs at INFO through its own top-level logger ``modelscope_hub`` (own handler, no
    propagation): quiet without -v, shown with it, and both restored afterwards."""
    import logging

    from modelscope_facemask.cli import _logging

    loggers = [logging.getLogger(name) for name in ("modelscope", "modelscope_hub", "modelscope_hub.upload")]
    before = [logger.level for logger in loggers]
    with _logging(False):
        assert not any(logger.isEnabledFor(logging.INFO) for logger in loggers)
        assert all(logger.isEnabledFor(logging.WARNING) for logger in loggers)
    with _logging(True):
        assert all(logger.isEnabledFor(logging.INFO) for logger in loggers)
    assert [logger.level for logger in loggers] == before


def test_a_fifo_named_directly_is_an_item_error_and_a_dangling_link_is_named(model_dir, photos, tmp_path, capsys):
    """Before: both were "no such file or folder", which is wrong for a FIFO (it exists) and does not say why a
    link that `ls` shows is missing. Now the FIFO is that item's error (never opened, the others answered) and the
    dangling link is named with its target."""
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    group = _group(photos, tmp_path)
    assert main(["embed", group, str(fifo), "--model", str(model_dir), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert f"{group}: 1 face(s)" in out and f"{fifo}: ERROR" in out and "not a regular file" in out
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    assert main(["embed", str(link), "--model", str(model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "a symbolic link to" in err and "deleted.jpg" in err and "which does not exist" in err
