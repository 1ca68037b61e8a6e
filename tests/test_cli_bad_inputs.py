"""Every `facemask` command with bad arguments and files: the exit code is 1 (a failure the command detected) or 2
(usage error), the message is one `facemask CMD: error: ...` line (or argparse's usage error), and nothing prints a
traceback. Runs in-process through ``main([...])`` with the small test model (fast); one case as a real subprocess.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.model_files.manifest import MANIFEST_FILE

from .fixture_data import linked_copy, replace_bytes

RANDOM = np.random.default_rng(7).bytes(4096)


def _model_variant(source: Path, folder: Path, change) -> Path:
    """A copy of the model folder (weights hard-linked: ``change`` replaces a weights file, never writes into it)."""
    linked_copy(source, folder)
    change(folder)
    return folder


@pytest.fixture(scope="module")
def bad(tmp_path_factory, small_model_dir, portraits) -> dict[str, str]:
    """Paths of good and bad inputs, by name (see the cases below)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    model = linked_copy(small_model_dir, root / "model")  # the regression model, weights hard-linked
    image = root / "images" / "face.jpg"
    image.parent.mkdir()
    shutil.copy(portraits["person_a_1"], image)
    (root / "binary.jpg").write_bytes(RANDOM)
    (root / "empty.jpg").write_bytes(b"")
    (root / "noimages").mkdir()
    (root / "noimages" / "readme.txt").write_text("no images here")
    (root / "notes.txt").write_text("a text file")
    (root / "dir.npz").mkdir()
    (root / "dir.png").mkdir()
    (root / "binary.csv").write_bytes(RANDOM)
    (root / "empty.csv").write_bytes(b"")
    (root / "nul.csv").write_bytes(b"image_a,image_b,same\n\x00a.jpg,b.jpg,1\n")
    (root / "badlabel.csv").write_text(f"image_a,image_b,same\n{image},{image},maybe\n")
    (root / "missing_images.csv").write_text("image_a,image_b,same\nnope1.jpg,nope2.jpg,1\nnope1.jpg,nope3.jpg,0\n")
    (root / "same_only.csv").write_text(f"image_a,image_b,same\n{image},{image},1\n")
    (root / "good.csv").write_text(f"image_a,image_b,same\n{image},{image},1\n{image},{image},0\n")
    (root / "list.json").write_text("[1, 2]")
    (root / "binary.npz").write_bytes(RANDOM)
    (root / "empty.npz").write_bytes(b"")
    (root / "text.npz").write_text("not an archive")

    def config(text: str | bytes):
        def change(folder: Path) -> None:
            path = folder / "configuration.json"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return change

    def config_dir(folder: Path) -> None:
        (folder / "configuration.json").unlink()
        (folder / "configuration.json").mkdir()

    variants = {
        "model_list_config": config("[1, 2]"),
        "model_bad_json": config('{"framework": "pytorch",'),
        "model_binary_config": config(RANDOM),
        "model_config_dir": config_dir,
        "model_no_weights": lambda f: (f / "pytorch_model.pt").unlink(),
        "model_bad_weights": lambda f: replace_bytes(f / "pytorch_model.pt", RANDOM),
        "model_empty_weights": lambda f: replace_bytes(f / "pytorch_model.pt", b""),
        "model_bad_detector": lambda f: replace_bytes(f / "detector" / "pytorch_model.pt", RANDOM),
    }
    paths = {name: str(_model_variant(model, root / name, change)) for name, change in variants.items()}
    (root / "model_empty").mkdir()
    app = root / "app"  # the review's case: a folder whose only link to us is a file named manifest.json
    (app / "src").mkdir(parents=True)
    (app / MANIFEST_FILE).write_text('{"name":"web"}')
    (app / "src" / "app.js").write_text("code")
    (root / "no_manifest").mkdir()
    (root / "no_manifest" / "configuration.json").write_text("{}")
    for name, content in (("manifest_binary", RANDOM), ("manifest_list", b"[]")):
        (root / name).mkdir()
        (root / name / MANIFEST_FILE).write_bytes(content)
    paths.update({name: str(root / name) for name in (
        "binary.jpg", "empty.jpg", "noimages", "notes.txt", "dir.npz", "dir.png", "binary.csv", "empty.csv",
        "nul.csv", "badlabel.csv", "missing_images.csv", "same_only.csv", "good.csv", "list.json", "binary.npz",
        "empty.npz", "text.npz", "model_empty", "app", "no_manifest", "manifest_binary", "manifest_list")})
    paths.update(model=str(model), image=str(image), images=str(image.parent), root=str(root),
                 missing=str(root / "missing.jpg"), missing_dir=str(root / "no-such-folder"),
                 under_file=str(root / "notes.txt" / "out"))
    return paths


M = ["--model", "{model}", "--device", "cpu"]
BAD_MODELS = ["missing_dir", "model_empty", "notes.txt", "model_list_config", "model_bad_json", "model_binary_config",
              "model_config_dir", "model_no_weights", "model_bad_weights", "model_empty_weights", "model_bad_detector"]

CASES: list[tuple[str, list[str], int]] = [
    # embed
    ("embed missing file", ["embed", "{missing}", *M], 2),
    ("embed binary file", ["embed", "{binary.jpg}", *M], 1),
    ("embed empty file", ["embed", "{empty.jpg}", *M], 1),
    ("embed folder without images", ["embed", "{noimages}", *M], 2),
    ("embed text file", ["embed", "{notes.txt}", *M], 1),
    ("embed --out .txt", ["embed", "{image}", *M, "--out", "{root}/x.txt"], 2),
    ("embed --out under a file", ["embed", "{image}", *M, "--out", "{under_file}.npz"], 2),
    ("embed --out is a folder", ["embed", "{image}", *M, "--out", "{dir.npz}"], 2),
    ("embed --batch-size 0", ["embed", "{image}", *M, "--batch-size", "0"], 2),
    ("embed --batch-size abc", ["embed", "{image}", *M, "--batch-size", "abc"], 2),
    ("embed --device cuda:7", ["embed", "{image}", "--model", "{model}", "--device", "cuda:7"], 2),
    ("embed --device banana", ["embed", "{image}", "--model", "{model}", "--device", "banana"], 2),
    ("embed --detector missing", ["embed", "{image}", *M, "--detector", "{missing_dir}"], 2),
    ("embed --detector text file", ["embed", "{image}", *M, "--detector", "{notes.txt}"], 2),
    ("embed --detector bad weights", ["embed", "{image}", *M, "--detector", "{model_bad_detector}/detector"], 2),
    *((f"embed --model {name}", ["embed", "{image}", "--model", f"{{{name}}}", "--device", "cpu"], 2)
      for name in BAD_MODELS),
    # compare
    ("compare missing file", ["compare", "{image}", "{missing}", *M], 2),
    ("compare binary file", ["compare", "{binary.jpg}", "{binary.jpg}", *M], 2),
    ("compare empty file", ["compare", "{empty.jpg}", "{empty.jpg}", *M], 2),
    ("compare folder", ["compare", "{images}", "{images}", *M], 2),
    ("compare --threshold nan", ["compare", "{image}", "{image}", *M, "--threshold", "nan"], 2),
    ("compare --threshold inf", ["compare", "{image}", "{image}", *M, "--threshold", "inf"], 2),
    ("compare --threshold 1.5", ["compare", "{image}", "{image}", *M, "--threshold", "1.5"], 2),
    ("compare --threshold=-2", ["compare", "{image}", "{image}", *M, "--threshold=-2"], 2),
    ("compare --model list config", ["compare", "{image}", "{image}", "--model", "{model_list_config}"], 2),
    ("compare --model bad weights", ["compare", "{image}", "{image}", "--model", "{model_bad_weights}"], 2),
    # annotate
    ("annotate --out .txt", ["annotate", "{image}", *M, "--out", "{root}/x.txt"], 2),
    ("annotate --out without suffix", ["annotate", "{image}", *M, "--out", "{root}/annotated"], 2),
    ("annotate --out is a folder", ["annotate", "{image}", *M, "--out", "{dir.png}"], 2),
    ("annotate --out under a file", ["annotate", "{image}", *M, "--out", "{under_file}.png"], 2),
    ("annotate missing file", ["annotate", "{missing}", *M, "--out", "{root}/a.png"], 2),
    ("annotate binary file", ["annotate", "{binary.jpg}", *M, "--out", "{root}/a.png"], 2),
    ("annotate empty file", ["annotate", "{empty.jpg}", *M, "--out", "{root}/a.png"], 2),
    ("annotate folder", ["annotate", "{noimages}", *M, "--out", "{root}/a.png"], 2),
    ("annotate --model list config", ["annotate", "{image}", "--out", "{root}/a.png", "--model", "{model_list_config}"],
     2),
    # evaluate
    ("evaluate --pairs binary", ["evaluate", "--pairs", "{binary.csv}", *M], 2),
    ("evaluate --pairs empty", ["evaluate", "--pairs", "{empty.csv}", *M], 2),
    ("evaluate --pairs NUL bytes", ["evaluate", "--pairs", "{nul.csv}", *M], 2),
    ("evaluate --pairs missing", ["evaluate", "--pairs", "{missing}", *M], 2),
    ("evaluate --pairs folder", ["evaluate", "--pairs", "{noimages}", *M], 2),
    ("evaluate --pairs bad label", ["evaluate", "--pairs", "{badlabel.csv}", *M], 2),
    ("evaluate --pairs missing images", ["evaluate", "--pairs", "{missing_images.csv}", *M], 2),
    ("evaluate same-person pairs only", ["evaluate", "--pairs", "{same_only.csv}", *M, "--no-progress"], 2),
    ("evaluate --json-out under a file", ["evaluate", "--pairs", "{good.csv}", *M, "--json-out", "{under_file}.json"], 2),
    ("evaluate --json-out is a folder", ["evaluate", "--pairs", "{good.csv}", *M, "--json-out", "{noimages}"], 2),
    ("evaluate --model binary config", ["evaluate", "--pairs", "{good.csv}", "--model", "{model_binary_config}"], 2),
    # env
    ("env --device cuda:9", ["env", "--device", "cuda:9"], 2),
    ("env --device banana", ["env", "--device", "banana"], 2),
    # regress create / check
    ("regress create --images missing", ["regress", "create", *M, "--images", "{missing_dir}", "--out",
                                         "{root}/r.npz"], 2),
    ("regress create --images file", ["regress", "create", *M, "--images", "{image}", "--out", "{root}/r.npz"], 2),
    ("regress create --images no images", ["regress", "create", *M, "--images", "{noimages}", "--out",
                                           "{root}/r.npz"], 2),
    ("regress create --out under a file", ["regress", "create", *M, "--images", "{images}", "--out",
                                           "{under_file}.npz"], 2),
    ("regress create --model list config", ["regress", "create", "--model", "{model_list_config}", "--images",
                                            "{images}", "--out", "{root}/r.npz"], 2),
    ("regress create --max-faces 0", ["regress", "create", *M, "--images", "{images}", "--out", "{root}/r.npz",
                                      "--max-faces", "0"], 2),
    *((f"regress check --reference {name}", ["regress", "check", *M, "--reference", f"{{{name}}}"], 2)
      for name in ("missing", "binary.npz", "empty.npz", "text.npz", "noimages", "list.json")),
    # pack
    ("pack --model missing", ["pack", "--model", "{missing_dir}", "--out", "{root}/p1"], 2),
    ("pack --model list config", ["pack", "--model", "{model_list_config}", "--out", "{root}/p2"], 2),
    ("pack --model bad weights", ["pack", "--model", "{model_bad_weights}", "--out", "{root}/p3"], 2),
    ("pack --out is a file", ["pack", "--model", "{model}", "--out", "{notes.txt}"], 2),
    ("pack --out is a file --force", ["pack", "--model", "{model}", "--out", "{notes.txt}", "--force"], 2),
    ("pack --out foreign folder --force", ["pack", "--model", "{model}", "--out", "{app}", "--force"], 2),
    ("pack --out inside the model", ["pack", "--model", "{model}", "--out", "{model}/packed"], 2),
    ("pack --out under a file", ["pack", "--model", "{model}", "--out", "{under_file}"], 2),
    ("pack --detector missing", ["pack", "--model", "{model}", "--detector", "{missing_dir}", "--out", "{root}/p4"], 2),
    ("pack --evaluation binary", ["pack", "--model", "{model}", "--evaluation", "{binary.csv}", "--out", "{root}/p5"],
     2),
    ("pack --evaluation list", ["pack", "--model", "{model}", "--evaluation", "{list.json}", "--out", "{root}/p6"], 2),
    ("pack --evaluation missing", ["pack", "--model", "{model}", "--evaluation", "{missing}", "--out", "{root}/p7"], 2),
    # publish (--dry-run: no network)
    ("publish missing folder", ["publish", "{missing_dir}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish a file", ["publish", "{notes.txt}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish without manifest", ["publish", "{no_manifest}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish binary manifest", ["publish", "{manifest_binary}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish list manifest", ["publish", "{manifest_list}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish foreign manifest", ["publish", "{app}", "--model-id", "a/b", "--dry-run"], 2),
    ("publish bad model id", ["publish", "{no_manifest}", "--model-id", "../x", "--dry-run"], 2),
    # demo (refused before the hub probe and the assets)
    ("demo --out is a file", ["demo", "--out", "{notes.txt}"], 2),
    ("demo --out foreign folder", ["demo", "--out", "{app}"], 2),
    ("demo --out under a file", ["demo", "--out", "{under_file}"], 2),
    ("demo --hub-timeout nan", ["demo", "--out", "{root}/d", "--hub-timeout", "nan"], 2),
    ("demo --hub-timeout=-1", ["demo", "--out", "{root}/d", "--hub-timeout=-1"], 2),
    # the command line itself
    ("no command", [], 2),
    ("unknown command", ["frobnicate"], 2),
    ("regress without action", ["regress"], 2),
    ("unknown option", ["embed", "{image}", "--frobnicate"], 2),
]


def _argv(template: list[str], paths: dict[str, str]) -> list[str]:
    return [re.sub(r"\{([^{}]+)\}", lambda m: paths[m.group(1)], part) for part in template]


@pytest.mark.parametrize("template, expected", [(t, e) for _, t, e in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_an_exit_code_and_one_line(bad, template, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")  # no hub: a hub id is never tried for long
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, checked below
    before = {p.relative_to(bad["root"]).as_posix(): p.stat().st_mtime_ns for p in Path(bad["root"]).rglob("*")}
    code = main(_argv(template, bad))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == expected, text
    assert "Traceback" not in text
    errors = [line for line in captured.err.splitlines() if ": error: " in line]
    assert len(errors) == 1 or (expected == 1 and "ERROR" in text), text
    assert "rerun with -v" not in text, f"an unexpected exception reached the command line: {text}"
    after = {p.relative_to(bad["root"]).as_posix(): p.stat().st_mtime_ns for p in Path(bad["root"]).rglob("*")}
    assert after == before  # no input was changed or deleted, no output or temporary file left beside them
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ms-cache") == []


def test_unexpected_errors_are_one_line_with_the_traceback_only_under_verbose(monkeypatch, capsys):
    import modelscope_facemask.cli.env as env

    def broken(device: str, check_hub: bool, precision: str = "fp32") -> dict:
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(env, "collect", broken)
    assert main(["env"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "facemask env: error: ZeroDivisionError: boom second line (rerun with -v for the traceback)\n"
    assert main(["env", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("(rerun with -v for the traceback)")


def test_the_token_is_masked_in_everything_printed(monkeypatch, capsys, caplog):
    """Whatever prints the token (an error message, a log line, a direct write), the command's output masks it."""
    import logging

    import modelscope_facemask.cli.env as env

    token = "tok-" + "9" * 24
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", token)

    def leaky(device: str, check_hub: bool, precision: str = "fp32") -> dict:
        print(f"Authorization: Bearer {token}")
        logging.getLogger("modelscope").error("Cookie: m_session_id=%s", token)
        sys.stderr.write(f"warning: token={token}\n")  # as warnings.showwarning and tqdm write
        raise RuntimeError(f"server said: Bearer {token}")

    monkeypatch.setattr(env, "collect", leaky)
    assert main(["env", "-v"]) == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert token not in text
    assert "Authorization: Bearer ***" in captured.out and "server said: Bearer ***" in captured.err
    assert "warning: token=***" in captured.err
    # ModelScope's log handler writes to the stream it found at import; the record itself is masked
    assert "Cookie: m_session_id=***" in caplog.text and token not in caplog.text


def test_embed_model_with_a_list_configuration_as_a_subprocess(bad):
    """As a user runs it: a real process, real stderr."""
    done = subprocess.run([sys.executable, "-m", "modelscope_facemask.cli", "embed", bad["image"], "--model",
                           bad["model_list_config"], "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith("facemask embed: error: ") and "configuration.json" in line


def test_embed_jsonl_is_strict_json_without_detection(bad, tmp_path):
    """use_det=False: the NaN scores and landmarks are written as null, never as NaN."""
    model = _model_variant(Path(bad["model"]), tmp_path / "nodet", lambda f: None)
    config = json.loads((model / "configuration.json").read_text())
    config["preprocessor"]["use_det"] = False
    (model / "configuration.json").write_text(json.dumps(config))
    out = tmp_path / "out" / "e.jsonl"
    assert main(["embed", bad["image"], "--model", str(model), "--device", "cpu", "--out", str(out)]) == 0
    (record,) = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
                 for line in out.read_text().splitlines()]
    (face,) = record["faces"]
    assert face["score"] is None and face["keypoints"] == [None] * 10
    assert len(face["embedding"]) == 512 and all(isinstance(v, float) for v in face["embedding"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["e.jsonl"]  # no temporary file left


def test_json_output_maps_non_finite_numbers_to_null(tmp_path):
    from modelscope_facemask.support.json_output import json_text, write_json

    data = {"a": float("nan"), "b": np.float32("inf"), "c": np.array([1.5, np.nan], np.float32), "d": (-np.inf, 2),
            "e": {"f": np.int64(3), "g": "NaN"}}
    assert json_text(data) == '{"a": null, "b": null, "c": [1.5, null], "d": [null, 2], "e": {"f": 3, "g": "NaN"}}'
    path = write_json(tmp_path / "sub" / "out.json", data)
    assert json.loads(path.read_text()) == json.loads(json_text(data))
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # written through a temporary sibling, renamed
