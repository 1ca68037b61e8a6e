"""`facemask pack` and `facemask publish`: a self-verifying repository, pushed with ModelScope's own HubApi to the
loopback hub emulator, then loaded by hub id through `pipeline()` with embeddings identical to the local folder."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.checkpoints import SAFETENSORS_WEIGHTS, TORCH_WEIGHTS, read_state_dict
from modelscope_facemask.cli import main
from modelscope_facemask.errors import CheckpointError
from modelscope_facemask.evaluate import evaluate_similarities
from modelscope_facemask.manifest import MANIFEST_FILE, file_sha256, read_manifest
from modelscope_facemask.model_card import read_front_matter
from modelscope_facemask.publish import compare_remote, upload_plan
from modelscope_facemask.testing.hub_emulator import reset_hub_config

from .regression.inputs import build_model
from .test_hub_emulator import TOKEN, hub  # noqa: F401  (the token-protected emulator fixture)

DETECTOR_FOLDER = "retinaface_mobilenet0.25"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_recognizer_state, mobilenet_state) -> Path:
    return build_model(tmp_path_factory.mktemp("pack-source"), small_recognizer_state, mobilenet_state)


@pytest.fixture(scope="module")
def packed(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "repo"
    evaluation = tmp_path_factory.mktemp("eval") / "eval.json"
    result = evaluate_similarities([0.9, 0.7, 0.4, 0.3, 0.35], [True, True, False, False, True])
    evaluation.write_text(json.dumps({"pairs_file": "pairs.csv", "evaluation": result.to_dict()}))
    assert main(["pack", "--model", str(model_dir), "--out", str(out), "--model-id", "facemask-test/small",
                 "--untrained", "--evaluation", str(evaluation)]) == 0
    return out


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
        for key in ("img_embedding", "scores", "boxes", "keypoints"):
            assert np.array_equal(a[key], b[key])


@pytest.mark.parametrize("corrupt", [SAFETENSORS_WEIGHTS, f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}", "configuration.json"])
def test_loading_verifies_the_manifest(packed, tmp_path, corrupt, photo_list, capsys):
    copy = tmp_path / "repo"
    shutil.copytree(packed, copy)
    data = bytearray((copy / corrupt).read_bytes())
    if corrupt == "configuration.json":
        data += b" "  # still valid JSON, one byte longer
    else:
        data[len(data) // 2] ^= 0x01  # same size, one bit off
    (copy / corrupt).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{copy / corrupt}.* is corrupted"):
        FaceMaskPipeline(str(copy), device="cpu")
    assert main(["embed", photo_list[0], "--model", str(copy), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{copy / corrupt}' is corrupted" in err and "Traceback" not in err


def test_manifest_is_checked_for_a_relative_model_path(packed, tmp_path, monkeypatch):
    shutil.copytree(packed, tmp_path / "repo")
    target = tmp_path / "repo" / DETECTOR_FOLDER / TORCH_WEIGHTS
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=f"'repo/{DETECTOR_FOLDER}/{TORCH_WEIGHTS}' is corrupted: sha256"):
        FaceMaskPipeline("repo", device="cpu")


def test_pack_puts_a_given_detector_inside(tmp_path, small_recognizer_state, mobilenet_detector_dir, photo_list):
    from modelscope_facemask.model_repos import facemask_configuration, write_facemask_repo

    source = write_facemask_repo(tmp_path / "source", small_recognizer_state,  # the detector named by hub id
                                 facemask_configuration(units=(1, 2, 2, 1)))
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


def test_pack_refuses_to_overwrite(model_dir, packed, tmp_path, capsys):
    assert main(["pack", "--model", str(model_dir), "--out", str(packed)]) == 2
    assert "pass --force" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["pack", "--model", str(model_dir), "--out", str(other), "--force"]) == 2
    assert "not a `facemask pack` output" in capsys.readouterr().err and (other / "keep.txt").exists()


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
    copy = tmp_path / "repo"
    shutil.copytree(packed, copy)
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
        for key in ("img_embedding", "scores", "boxes", "keypoints"):
            assert np.array_equal(a[key], b[key])

    # publishing again is idempotent: nothing changes on the hub, verification passes
    assert main(["publish", str(packed), "--model-id", "facemask-test/small-published"]) == 0
    assert "(existing repository, visibility unchanged)" in capsys.readouterr().out
    assert _tree(hub.repo_dir("facemask-test/small-published")) == before


def test_publish_with_a_wrong_token_fails_cleanly(hub, packed, monkeypatch, capsys):
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "wrong-token")
    reset_hub_config()
    assert main(["publish", str(packed), "--model-id", "facemask-test/denied"]) == 1
    out = capsys.readouterr().out
    assert "upload to facemask-test/denied failed" in out and "wrong-token" not in out
    assert not hub.repo_dir("facemask-test/denied").exists()
