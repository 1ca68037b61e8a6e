"""`facemask pack` and `facemask publish`: a self-verifying repository, pushed with ModelScope's own HubApi to the
loopback hub emulator, then loaded by hub id through `pipeline()` with embeddings identical to the local folder."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
import requests
import torch
import yaml

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.model_files.checkpoints import SAFETENSORS_WEIGHTS, TORCH_WEIGHTS, read_state_dict
from modelscope_facemask.cli import main
from modelscope_facemask.errors import CheckpointError
from modelscope_facemask.tools.evaluate import evaluate_similarities
from modelscope_facemask.model_files.manifest import MANIFEST_FILE, file_sha256, read_manifest, replacement_problem, write_manifest
from modelscope_facemask.tools.hub.model_card import read_front_matter
from modelscope_facemask.tools.hub.publish import compare_remote, upload_plan
from modelscope_facemask.testing.hub_emulator import reset_hub_config
from modelscope_facemask.tools.hub.token_scrubbing import scrub_token, token_forms

from .fixture_data import DETECTOR_FOLDER, OUTPUT_KEYS, SMALL_UNITS, linked_copy, linked_facemask_repo, replace_bytes
from .test_hub_emulator import TOKEN, hub  # noqa: F401  (the token-protected emulator fixture)


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    return small_model_dir  # the regression model of tests/regression/inputs.py, shared: read only


@pytest.fixture(scope="module")
def packed(model_dir, tmp_path_factory, small_safetensors_file, shared_files) -> Path:
    """The small model packed; its weights files are then hard links to the session's identical ones (read only:
    a test that changes the folder takes a linked_copy)."""
    out = tmp_path_factory.mktemp("packed") / "repo"
    evaluation = tmp_path_factory.mktemp("eval") / "eval.json"
    result = evaluate_similarities([0.9, 0.7, 0.4, 0.3, 0.35], [True, True, False, False, True])
    evaluation.write_text(json.dumps({"pairs_file": "pairs.csv", "evaluation": result.to_dict()}))
    assert main(["pack", "--model", str(model_dir), "--out", str(out), "--model-id", "facemask-test/small",
                 "--untrained", "--evaluation", str(evaluation)]) == 0
    return shared_files.share(out)


@pytest.fixture(scope="module")
def photo_list(portraits) -> list[str]:
    return [str(portraits[name]) for name in ("person_a_1", "person_b_2", "impostor_2")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pack_layout_card_and_manifest(packed, model_dir, small_recognizer_state):
    files = set(_tree(packed))
    assert files == {"README.md", "configuration.json", MANIFEST_FILE, TORCH_WEIGHTS, SAFETENSORS_WEIGHTS,
                     f"{DETECTOR_FOLDER}/configuration.json", f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}"}
    manifest = read_manifest(packed)
    assert set(manifest) == files - {MANIFEST_FILE}
    for rel, entry in manifest.items():
        assert entry == {"sha256": file_sha256(packed / rel), "size": (packed / rel).stat().st_size}
    for name in (TORCH_WEIGHTS, SAFETENSORS_WEIGHTS):
        state = read_state_dict(packed / name)
        assert state.keys() == small_recognizer_state.keys()
        assert all(torch.equal(state[k], small_recognizer_state[k]) for k in state)
    config = json.loads((packed / "configuration.json").read_text())
    assert config["preprocessor"]["detector"] == DETECTOR_FOLDER and config["model"]["backbone"]["units"] == [1, 2, 2, 1]
    assert config["task"] == "face-recognition" and config["pipeline"]["type"] == "resnet-face-recognition-facemask"

    card = (packed / "README.md").read_text()
    meta = read_front_matter(card)
    assert meta["tasks"] == ["face-recognition"] and meta["frameworks"] == ["pytorch"]
    assert meta["license"] == "apache-2.0" and {"face-recognition", "untrained"} <= set(meta["tags"])
    assert yaml.safe_load(card.split("---")[1]) == meta
    assert "UNTRAINED WEIGHTS" in card and "pipeline(Tasks.face_recognition, 'facemask-test/small')" in card
    assert "| `img_embedding` | (N, 512) float32 |" in card
    params = sum(v.numel() for k, v in small_recognizer_state.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert f"{params:,} parameters" in card and "426,608 parameters" in card
    assert "| ROC AUC | 0.8333 |" in card and "on `pairs.csv`" in card  # 5 of 6 genuine>impostor orderings


def test_packed_folder_gives_the_source_embeddings(packed, model_dir, photo_list):
    source = FaceMaskPipeline(str(model_dir), device="cpu")(photo_list)
    repacked = FaceMaskPipeline(str(packed), device="cpu")(photo_list)
    for a, b in zip(source, repacked):
        for key in OUTPUT_KEYS:
            assert np.array_equal(a[key], b[key])


@pytest.mark.parametrize("corrupt", [SAFETENSORS_WEIGHTS, f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}", "configuration.json"])
def test_loading_verifies_the_manifest(packed, tmp_path, corrupt, photo_list, capsys):
    copy = linked_copy(packed, tmp_path / "repo")
    data = bytearray((copy / corrupt).read_bytes())
    if corrupt == "configuration.json":
        data += b" "  # still valid JSON, one byte longer
    else:
        data[len(data) // 2] ^= 0x01  # same size, one bit off
    replace_bytes(copy / corrupt, bytes(data))  # a new file: the linked original keeps its bytes
    with pytest.raises(CheckpointError, match=f"{copy / corrupt}.* is corrupted"):
        FaceMaskPipeline(str(copy), device="cpu")
    assert main(["embed", photo_list[0], "--model", str(copy), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{copy / corrupt}' is corrupted" in err and "Traceback" not in err


def test_manifest_is_checked_for_a_relative_model_path(packed, tmp_path, monkeypatch):
    linked_copy(packed, tmp_path / "repo")
    target = tmp_path / "repo" / DETECTOR_FOLDER / TORCH_WEIGHTS
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x01
    replace_bytes(target, bytes(data))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=f"'repo/{DETECTOR_FOLDER}/{TORCH_WEIGHTS}' is corrupted: sha256"):
        FaceMaskPipeline("repo", device="cpu")


def test_pack_puts_a_given_detector_inside(tmp_path, small_model_dir, mobilenet_detector_dir, photo_list):
    from modelscope_facemask.tools.hub.repository_writers import facemask_configuration

    source = linked_facemask_repo(tmp_path / "source", small_model_dir,  # the detector named by hub id
                                  facemask_configuration(units=SMALL_UNITS))
    out = tmp_path / "packed"
    assert main(["pack", "--model", str(source), "--detector", str(mobilenet_detector_dir), "--out", str(out)]) == 0
    config = json.loads((out / "configuration.json").read_text())
    assert config["preprocessor"]["detector"] == DETECTOR_FOLDER
    assert (out / DETECTOR_FOLDER / TORCH_WEIGHTS).is_file()
    card = (out / "README.md").read_text()
    assert "No accuracy figures are claimed" in card and "untrained" not in read_front_matter(card)["tags"]
    with_detector = FaceMaskPipeline(str(source), device="cpu", detector_model=str(mobilenet_detector_dir))
    for a, b in zip(with_detector(photo_list), FaceMaskPipeline(str(out), device="cpu")(photo_list)):
        assert np.array_equal(a["img_embedding"], b["img_embedding"])


def _small_output(folder: Path, output: str = "pack") -> Path:
    """A folder with a few files and a manifest generated by this package (as `facemask pack` writes it)."""
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    write_manifest(folder, output)
    return folder


def _mutations() -> dict[str, object]:
    def rewrite_manifest(folder: Path, change) -> None:
        data = json.loads((folder / MANIFEST_FILE).read_text())
        change(data)
        (folder / MANIFEST_FILE).write_text(json.dumps(data))

    return {
        "extra file": lambda f: (f / "notes.txt").write_text("mine"),
        "extra hidden file": lambda f: (f / ".env").write_text("SECRET=1"),
        "extra folder": lambda f: (f / "empty").mkdir(),
        "nested extra file": lambda f: (f / "sub" / "c.txt").write_text("mine"),
        "missing file": lambda f: (f / "a.txt").unlink(),
        "resized file": lambda f: (f / "a.txt").write_text("alphabet"),
        "same size, other bytes": lambda f: (f / "a.txt").write_text("ALPHA"),
        "symbolic link": lambda f: (f / "link").symlink_to(f / "a.txt"),
        "no generator (older version or other tool)": lambda f: rewrite_manifest(f, lambda d: d.pop("generator")),
        "foreign generator": lambda f: rewrite_manifest(f, lambda d: d.update(generator="other-tool 1.0")),
        "another command's output": lambda f: rewrite_manifest(f, lambda d: d.update(output="demo")),
        "manifest not JSON": lambda f: (f / MANIFEST_FILE).write_bytes(b"\x89PNG\r\n\x1a\n\x00"),
        "manifest a JSON list": lambda f: (f / MANIFEST_FILE).write_text("[]"),
        "malformed file table": lambda f: rewrite_manifest(f, lambda d: d["files"].update({"a.txt": {"size": "5"}})),
        "no manifest": lambda f: (f / MANIFEST_FILE).unlink(),
    }


def test_replacement_needs_an_unchanged_generated_output(tmp_path):
    assert replacement_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert replacement_problem(tmp_path / "empty") is None
    assert replacement_problem(_small_output(tmp_path / "ours")) is None
    manifest = json.loads((tmp_path / "ours" / MANIFEST_FILE).read_text())
    assert manifest["generator"].startswith("modelscope-facemask ") and manifest["output"] == "pack"
    assert set(manifest["files"]) == {"a.txt", "sub/b.bin"}
    assert "not `facemask demo` output" in replacement_problem(tmp_path / "ours", "demo")
    (tmp_path / "file").write_text("x")
    assert replacement_problem(tmp_path / "file") == "it is a file, not a folder"
    (tmp_path / "linked").symlink_to(tmp_path / "ours")
    assert replacement_problem(tmp_path / "linked") == "it is a symbolic link"
    for name, mutate in _mutations().items():
        folder = _small_output(tmp_path / name.replace(" ", "_").replace(",", ""))
        mutate(folder)
        assert replacement_problem(folder) is not None, name


def test_pack_refuses_to_overwrite(model_dir, packed, tmp_path, capsys):
    assert main(["pack", "--model", str(model_dir), "--out", str(packed)]) == 2
    assert "pass --force" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["pack", "--model", str(model_dir), "--out", str(other), "--force"]) == 2
    assert "not provably an unchanged `facemask pack` output" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"


def test_pack_force_never_deletes_a_foreign_folder(model_dir, tmp_path, capsys):
    """The review's case: a web app whose only link to us is a file named manifest.json."""
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / MANIFEST_FILE).write_text('{"name":"web"}')
    (app / "src" / "app.js").write_text("console.log('hi')")
    before = _tree(app)
    assert main(["pack", "--model", str(model_dir), "--out", str(app), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to replace '{app}'" in err and "not a modelscope-facemask manifest" in err
    assert "move or delete it yourself" in err and "Traceback" not in err
    assert _tree(app) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]  # no staging folder was even started


@pytest.mark.parametrize("name", ["extra file", "extra hidden file", "same size, other bytes",
                                  "no generator (older version or other tool)", "another command's output"])
def test_pack_force_refuses_a_changed_output(model_dir, tmp_path, name, capsys):
    folder = _small_output(tmp_path / "out")
    _mutations()[name](folder)
    before = _tree(folder)
    assert main(["pack", "--model", str(model_dir), "--out", str(folder), "--force"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert _tree(folder) == before


def test_pack_force_replaces_an_unchanged_output_atomically(model_dir, packed, tmp_path, monkeypatch, capsys):
    import modelscope_facemask.tools.hub.pack as pack

    out = linked_copy(packed, tmp_path / "repo")
    before = _tree(out)

    def broken_check(folder, state):
        assert folder != out and folder.parent == out.parent  # checked in a temporary sibling, before the rename
        raise CheckpointError("simulated failure after writing")

    with monkeypatch.context() as patch:
        patch.setattr(pack, "_check_packed", broken_check)
        assert main(["pack", "--model", str(model_dir), "--out", str(out), "--force", "--model-id", "x/y"]) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert _tree(out) == before  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # the staging folder is gone

    assert main(["pack", "--model", str(model_dir), "--out", str(out), "--force", "--model-id", "x/y"]) == 0
    after = _tree(out)
    assert set(after) == set(before) and "pipeline(Tasks.face_recognition, 'x/y')" in after["README.md"].decode()
    assert replacement_problem(out) is None and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_dry_run_needs_no_network_and_hides_the_token(packed, monkeypatch, capsys):
    from modelscope_hub._upload import _is_lfs  # the client's own rule, to keep ours in step with it

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)
    assert main(["publish", str(packed), "--model-id", "facemask-test/small", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and "MODELSCOPE_API_TOKEN is set" in out
    plan = upload_plan(packed)
    assert [p.path for p in plan] == sorted(_tree(packed))
    for item in plan:
        assert item.lfs == _is_lfs(item.path, item.size, "model")
        assert f"{item.size:,}  {'LFS   ' if item.lfs else 'inline'}  {item.path}" in out
    assert {p.path for p in plan if p.lfs} == {TORCH_WEIGHTS, SAFETENSORS_WEIGHTS, f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}"}


def test_publish_usage_errors(packed, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    assert main(["publish", str(packed), "--model-id", "facemask-test/small"]) == 2
    assert "no access token: set MODELSCOPE_API_TOKEN" in capsys.readouterr().err
    assert main(["publish", str(packed), "--model-id", "not-an-id", "--dry-run"]) == 2
    assert main(["publish", str(tmp_path), "--model-id", "a/b", "--dry-run"]) == 2
    assert f"has no {MANIFEST_FILE}" in capsys.readouterr().err
    copy = linked_copy(packed, tmp_path / "repo")
    (copy / "notes.txt").write_text("not packed")
    assert main(["publish", str(copy), "--model-id", "a/b", "--dry-run"]) == 2
    assert "files its manifest does not list (notes.txt)" in capsys.readouterr().err


def test_compare_remote_reports_differences(packed):
    manifest = read_manifest(packed)
    remote = {rel: {"size": e["size"], "sha256": e["sha256"]} for rel, e in manifest.items()}
    remote[MANIFEST_FILE] = {"size": 1, "sha256": None}
    assert compare_remote(packed, remote) == ([], len(manifest))
    remote["README.md"] = {"size": manifest["README.md"]["size"], "sha256": "0" * 64}
    remote[TORCH_WEIGHTS] = {"size": 5, "sha256": None}
    del remote[SAFETENSORS_WEIGHTS]
    problems, _ = compare_remote(packed, remote)
    assert problems == [f"README.md: sha256 {'0' * 64} on the hub, {manifest['README.md']['sha256']} in the manifest",
                        f"{SAFETENSORS_WEIGHTS}: missing on the hub",
                        f"{TORCH_WEIGHTS}: 5 bytes on the hub, {manifest[TORCH_WEIGHTS]['size']} in the manifest"]


def test_pack_publish_then_pipeline_by_hub_id(hub, packed, photo_list, capsys):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    before = _tree(packed)
    assert main(["publish", str(packed), "--model-id", "facemask-test/small-published", "--private"]) == 0
    out = capsys.readouterr().out
    assert "verified: all 6 manifest files on the hub with the right size; sha256 matched for 6" in out
    assert "(created (private))" in out and TOKEN not in out
    assert _tree(packed) == before  # nothing (no .ms_upload_cache) written into the folder
    assert _tree(hub.repo_dir("facemask-test/small-published")) == before
    (commit,) = hub.commits
    assert {path for _, path, mode in commit.actions if mode == "lfs"} == {
        TORCH_WEIGHTS, SAFETENSORS_WEIGHTS, f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}"}

    info = requests.get(f"{hub.endpoint}/api/v1/models/facemask-test/small-published", timeout=10).json()
    assert info["Data"]["Visibility"] == 1  # private

    remote = pipeline(Tasks.face_recognition, "facemask-test/small-published", trust_remote_code=True, device="cpu")
    local = FaceMaskPipeline(str(packed), device="cpu")
    assert type(remote).__name__ == "FaceMaskPipeline"
    assert Path(remote.model.model_dir).is_relative_to(Path(os.environ["MODELSCOPE_CACHE"]))
    for a, b in zip(remote(photo_list), local(photo_list)):
        for key in OUTPUT_KEYS:
            assert np.array_equal(a[key], b[key])

    # publishing again is idempotent: nothing changes on the hub, verification passes
    assert main(["publish", str(packed), "--model-id", "facemask-test/small-published"]) == 0
    assert "(existing repository, visibility unchanged)" in capsys.readouterr().out
    assert _tree(hub.repo_dir("facemask-test/small-published")) == before


def test_publish_with_a_wrong_token_fails_cleanly(hub, packed, monkeypatch, capsys):
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "wrong-token")
    reset_hub_config()
    assert main(["publish", str(packed), "--model-id", "facemask-test/denied"]) == 1
    captured = capsys.readouterr()
    assert "upload to facemask-test/denied failed" in captured.err and "wrong-token" not in captured.err + captured.out
    assert "failed" not in captured.out  # errors go to stderr
    assert not hub.repo_dir("facemask-test/denied").exists()


class _EchoHeaders(BaseHTTPRequestHandler):
    """A hostile or broken hub: every request is answered with an error whose body echoes the request headers."""

    status = 500

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = ("upstream error; request was:\n" + "".join(f"{k}: {v}\n" for k, v in self.headers.items())).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("status", [500, 400])
@pytest.mark.parametrize("verbose", [False, True])
def test_publish_never_prints_the_token_a_server_echoes(packed, tmp_path, monkeypatch, capsys, status, verbose):
    token = "s3cret/t0ken+with=odd&chars"  # raw, percent-encoded and form-encoded spellings differ
    handler = type("Echo", (_EchoHeaders,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", token)
    reset_hub_config()
    try:
        code = main(["publish", str(packed), "--model-id", "facemask-test/echo", *(["-v"] if verbose else [])])
    finally:
        server.shutdown()
        server.server_close()
        reset_hub_config()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1 and "upload to facemask-test/echo failed" in captured.err
    assert "Bearer ***" in captured.err  # the server did echo the header: it was masked, not lost
    for form in token_forms(token):
        assert form not in text
    assert ("Traceback" in captured.err) == verbose


def test_scrub_token_masks_every_form():
    token = "ab/cd+ef"
    text = f"Authorization: Bearer {token}; Cookie: m_session_id={quote(token, safe='')}; q={quote_plus(token)}"
    scrubbed = scrub_token(text, token)
    assert scrubbed == "Authorization: Bearer ***; Cookie: m_session_id=***; q=***"
    assert scrub_token(text, "") == text


def test_a_short_token_is_masked_where_it_stands_alone_only():
    text = "Authorization: Bearer abc; Cookie: m_session_id=abc\nabcdef uploaded to /models/xabc, token=abc"
    assert scrub_token(text, "abc") == ("Authorization: Bearer ***; Cookie: m_session_id=***\nabcdef uploaded to "
                                        "/models/xabc, token=***")
