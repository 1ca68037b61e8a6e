"""The Hugging Face Hub path: `facemask publish --hub huggingface` through huggingface_hub's own HfApi to the loopback
emulator (HF_ENDPOINT=127.0.0.1, HF_HUB_DISABLE_XET=1: the LFS path), then `hf://` loads from huggingface_hub's
cache, verified against manifest.json, with embeddings identical to the local folder."""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.model_files.checkpoints import SAFETENSORS_WEIGHTS, TORCH_WEIGHTS
from modelscope_facemask.cli import main
from modelscope_facemask.errors import CheckpointError, HubDownloadError, MissingExtraError, ModelSourceError
from modelscope_facemask.model_files.huggingface_download import parse_hf_reference
from modelscope_facemask.tools.hub.huggingface import remote_listing
from modelscope_facemask.model_files.manifest import MANIFEST_FILE, compare_remote, read_manifest
from modelscope_facemask.model_files.model_folders import hf_model_dir
from modelscope_facemask.testing.hf_hub_emulator import (HfHubEmulator, hf_environment, patch_hf_constants,
                                                         validate_card_metadata)

from .fixture_data import DETECTOR_FOLDER, OUTPUT_KEYS, PACKED_MODEL_ID

TOKEN = "hf_EmulatorOnlySecret0123456789"
REPO = PACKED_MODEL_ID
LFS_FILES = {TORCH_WEIGHTS, SAFETENSORS_WEIGHTS, f"{DETECTOR_FOLDER}/{TORCH_WEIGHTS}"}


@pytest.fixture(scope="module")
def packed(small_packed_dir) -> Path:
    """`facemask pack --model-id REPO --untrained` of the small model, made once per session (conftest.py): read
    only."""
    return small_packed_dir


@pytest.fixture(scope="module")
def emulator():
    with HfHubEmulator(token=TOKEN) as hub:
        yield hub


@pytest.fixture()
def hf_env(emulator, tmp_path, monkeypatch):
    """huggingface_hub pointed at the emulator, a fresh cache, HF_TOKEN set, no stored login (HF_HOME is empty)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    env = hf_environment(emulator, tmp_path / "hf-cache", TOKEN)
    patch_hf_constants(monkeypatch, env)
    emulator.clear_faults()
    return env


@pytest.fixture(scope="module")
def published(packed, emulator, tmp_path_factory):
    """``REPO`` published once through the CLI; the request log of that publish."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        patch_hf_constants(mp, hf_environment(emulator, tmp_path_factory.mktemp("hf-cache"), TOKEN))
        start = len(emulator.requests)
        assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", REPO, "--private"]) == 0
        return emulator.request_templates()[start:]
    finally:
        mp.undo()


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_card_front_matter_serves_both_hubs(packed, recwarn):
    from huggingface_hub import ModelCard

    text = (packed / "README.md").read_text(encoding="utf-8")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert not [w for w in recwarn.list], [str(w.message) for w in recwarn.list]
    assert data["library_name"] == "modelscope-facemask" and data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == "apache-2.0" and {"face-recognition", "untrained"} <= set(data["tags"])
    assert data["tasks"] == ["face-recognition"] and data["frameworks"] == ["pytorch"]  # ModelScope's keys
    assert validate_card_metadata(text) == []
    assert f"pipeline(Tasks.face_recognition, '{REPO}')" in text  # ModelScope
    assert f"hf_model_dir('hf://{REPO}')" in text and f"--model hf://{REPO}" in text  # Hugging Face


def test_hf_references():
    assert parse_hf_reference("hf://a/b") == parse_hf_reference("hf://a/b")
    assert parse_hf_reference("hf://Owner-1/name.v2@main").revision == "main"
    assert parse_hf_reference("hf://o/n@0123abc").repo_id == "o/n"
    for bad in ("hf://", "hf://a", "hf://a/b/c", "hf://a/../b", "hf://a/b@", "hf://a b/c"):
        with pytest.raises(ModelSourceError, match="hf://OWNER/NAME"):
            parse_hf_reference(bad)


def test_dry_run_uploads_nothing(packed, emulator, hf_env, capsys):
    start = len(emulator.requests)
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "facemask-test/dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert emulator.requests[start:] == [] and "facemask-test/dry" not in emulator.repos
    assert "dry run: would upload" in out and "token (HF_TOKEN or `hf auth login`) is set" in out
    assert TOKEN not in out
    for rel, size in {**{r: e["size"] for r, e in read_manifest(packed).items()}}.items():
        assert f"{size:,}  {rel}" in out


def test_publish_round_trip_and_pipeline(packed, published, emulator, hf_env, portraits, capsys):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    # the emulated hub holds exactly the packed bytes; weights went through LFS, the rest inline
    assert emulator.repo_files(REPO) == _tree(packed)
    assert emulator.repo(REPO).lfs == LFS_FILES and emulator.repo(REPO).private
    for step in ("POST /api/repos/create", "POST /api/models/{repo}/preupload/{rev}",
                 "POST /{repo}.git/info/lfs/objects/batch", "PUT /lfs-upload/{oid}",
                 "POST /{repo}.git/info/lfs/objects/verify", "POST /api/models/{repo}/commit/{rev}",
                 "GET /api/models/{repo}/tree/{rev}"):
        assert step in published
    assert published.count("PUT /lfs-upload/{oid}") == len(LFS_FILES)
    # the listing's LFS sha256 values are the manifest's (computed independently here with hashlib)
    listing = remote_listing(REPO, TOKEN)
    for rel in LFS_FILES:
        assert listing[rel]["sha256"] == hashlib.sha256((packed / rel).read_bytes()).hexdigest()
    assert compare_remote(packed, listing) == ([], 6)

    start = len(emulator.requests)
    folder = Path(hf_model_dir(f"hf://{REPO}"))
    assert folder.is_relative_to(Path(hf_env["HF_HUB_CACHE"]))
    assert _tree(folder) == _tree(packed)
    load = emulator.request_templates()[start:]
    assert "HEAD /{repo}/resolve/{rev}/{path} (LFS: 302)" in load and "GET /lfs-cdn/{oid} (the CDN host)" in load

    photos = [str(portraits[name]) for name in ("person_a_1", "person_b_2", "impostor_2")]
    remote = pipeline(Tasks.face_recognition, str(folder), trust_remote_code=True, device="cpu")
    local = FaceMaskPipeline(str(packed), device="cpu")
    assert type(remote).__name__ == "FaceMaskPipeline"
    assert Path(remote.preprocessor.detector.weights_file).parent == folder / DETECTOR_FOLDER  # from the snapshot
    for a, b in zip(remote(photos), local(photos)):
        assert a["img_embedding"].shape[0] >= 1
        for key in OUTPUT_KEYS:
            assert np.array_equal(a[key], b[key])

    # --model hf://... in the CLI: the same snapshot, no new download of weights
    start = len(emulator.requests)
    assert main(["compare", photos[0], photos[1], "--model", f"hf://{REPO}@main", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    a, b = local([photos[0], photos[1]])
    assert result["similarity"] == pytest.approx(float(np.dot(a["img_embedding"][0], b["img_embedding"][0])),
                                                 abs=1e-6)
    assert "GET /lfs-cdn/{oid} (the CDN host)" not in emulator.request_templates()[start:]

    # publishing again is idempotent: the hub already has every blob (no upload), verification passes
    start = len(emulator.requests)
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", REPO]) == 0
    assert "(existing repository, visibility unchanged)" in capsys.readouterr().out
    assert "PUT /lfs-upload/{oid}" not in emulator.request_templates()[start:]
    assert emulator.repo_files(REPO) == _tree(packed)


def test_offline_load_from_cache(packed, published, emulator, hf_env, monkeypatch):
    online = hf_model_dir(f"hf://{REPO}")
    start = len(emulator.requests)
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hf_model_dir(f"hf://{REPO}") == online
    assert emulator.requests[start:] == []  # not one request
    with pytest.raises(HubDownloadError, match="HF_HUB_OFFLINE=1 and it is not in the huggingface_hub cache"):
        hf_model_dir("hf://facemask-test/never-downloaded")


def test_tampered_download_is_refused(packed, published, emulator, hf_env, capsys):
    data = bytearray((packed / SAFETENSORS_WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 can tell
    emulator.tamper_file(REPO, SAFETENSORS_WEIGHTS, bytes(data))
    with pytest.raises(CheckpointError, match=f"{SAFETENSORS_WEIGHTS}' is corrupted: sha256"):
        hf_model_dir(f"hf://{REPO}")
    assert main(["embed", str(packed / "README.md"), "--model", f"hf://{REPO}", "--device", "cpu",
                 "--out", str(Path(hf_env["HF_HUB_CACHE"]) / "x.npz")]) == 2
    assert "is corrupted: sha256" in capsys.readouterr().err


def test_weights_added_by_a_later_commit_are_refused(packed, emulator, hf_env, tmp_path, capsys):
    """A later commit adds a model.safetensors beside the detector's listed pytorch_model.pt (box biases shifted):
    the snapshot's listed files all match the manifest, but the file the loader would prefer is not listed."""
    from huggingface_hub import HfApi

    from modelscope_facemask.model_files.checkpoints import read_state_dict, save_state_dict

    repo = "facemask-test/later-commit"
    api = HfApi(token=TOKEN)
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=str(packed), ignore_patterns=[".*", "**/.*"])
    state = read_state_dict(packed / DETECTOR_FOLDER / TORCH_WEIGHTS)
    state = {k: v + 1.0 if k.startswith("BboxHead") and k.endswith("bias") else v for k, v in state.items()}
    save_state_dict(state, tmp_path / SAFETENSORS_WEIGHTS)
    api.upload_file(path_or_fileobj=str(tmp_path / SAFETENSORS_WEIGHTS), repo_id=repo,
                    path_in_repo=f"{DETECTOR_FOLDER}/{SAFETENSORS_WEIGHTS}", commit_message="later commit")
    folder = Path(hf_model_dir(f"hf://{repo}"))  # every listed file matches the manifest
    stray = folder / DETECTOR_FOLDER / SAFETENSORS_WEIGHTS
    assert stray.is_file()
    with pytest.raises(CheckpointError, match="is not listed in"):
        FaceMaskPipeline(f"hf://{repo}", device="cpu")
    assert main(["embed", str(packed / "README.md"), "--model", f"hf://{repo}", "--device", "cpu",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert f"{str(stray)!r} is not listed in" in capsys.readouterr().err


def test_token_never_printed(packed, emulator, hf_env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.fail_requests(r"/commit/", status=500, echo_headers=True)
    code = main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "facemask-test/echo", "-v"])
    captured = capsys.readouterr()
    assert code == 1 and "emulated fault" in captured.err and "Bearer ***" in captured.err
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_wrong_token_fails_cleanly(packed, emulator, hf_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "facemask-test/wrong"]) == 1
    err = capsys.readouterr().err
    assert "upload to facemask-test/wrong" in err and "401" in err and "facemask-test/wrong" not in emulator.repos


def test_publish_usage_errors(packed, emulator, hf_env, monkeypatch, capsys):
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "not-an-id"]) == 2
    assert "must look like OWNER/NAME" in capsys.readouterr().err
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "a/b", "--sync"]) == 2
    assert "--sync is only supported with --hub modelscope" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    start = len(emulator.requests)
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "a/b"]) == 2
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert emulator.requests[start:] == []


def test_unreachable_endpoint(packed, hf_env, monkeypatch, capsys):
    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    assert main(["publish", str(packed), "--hub", "huggingface", "--repo-id", "a/b"]) == 2
    assert f"cannot reach the Hugging Face Hub at {dead}" in capsys.readouterr().err
    assert main(["compare", str(packed / "README.md"), str(packed / "README.md"), "--model", "hf://a/b"]) == 2
    err = capsys.readouterr().err
    assert f"the Hugging Face Hub at {dead} cannot be reached and it is not in the huggingface_hub cache" in err
    assert main(["compare", str(packed / "README.md"), str(packed / "README.md"), "--model", "hf://a/b/c"]) == 2
    assert "is not a Hugging Face reference" in capsys.readouterr().err


def test_missing_repository_and_revision(emulator, hf_env, published):
    with pytest.raises(HubDownloadError, match="does not exist on the Hugging Face Hub"):
        hf_model_dir("hf://facemask-test/missing")
    with pytest.raises(HubDownloadError, match="revision 'v9' does not exist"):
        hf_model_dir(f"hf://{REPO}@v9")


def test_compare_remote_reports_differences(packed):
    manifest = read_manifest(packed)
    remote = {rel: {"size": e["size"], "sha256": e["sha256"] if rel in LFS_FILES else None,
                    "git_oid": None if rel in LFS_FILES else
                    hashlib.sha1(b"blob %d\0" % e["size"] + (packed / rel).read_bytes()).hexdigest()}
              for rel, e in manifest.items()}
    remote[MANIFEST_FILE] = {"size": 1, "sha256": None, "git_oid": None}
    assert compare_remote(packed, remote) == ([], len(manifest))
    remote["README.md"]["git_oid"] = "0" * 40
    remote[TORCH_WEIGHTS]["sha256"] = "f" * 64
    del remote[SAFETENSORS_WEIGHTS]
    problems, _ = compare_remote(packed, remote)
    assert problems == [f"README.md: the hub's git blob {'0' * 40} is not the manifest's content",
                        f"{SAFETENSORS_WEIGHTS}: missing on the hub",
                        f"{TORCH_WEIGHTS}: sha256 {'f' * 64} on the hub, {manifest[TORCH_WEIGHTS]['sha256']} in the "
                        "manifest"]


def test_emulator_validates_card_metadata():
    assert validate_card_metadata("---\npipeline_tag: face-magic\n---\n") == [
        "\"pipeline_tag\" must be a known task, got 'face-magic'"]
    assert validate_card_metadata("---\ntags: 3\n---\n") == ['"tags" must be a list of strings']
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_card_metadata("# no front matter\n") == []


def test_missing_huggingface_hub_names_the_extra(portraits, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # "import huggingface_hub" fails as if not installed
    with pytest.raises(MissingExtraError, match=r"huggingface_hub is not installed .*\[huggingface\]"):
        hf_model_dir("hf://owner/name")
    assert main(["embed", str(portraits["person_a_1"]), "--model", "hf://owner/name", "--device", "cpu"]) == 2
    assert "pip install 'modelscope-facemask[huggingface]'" in capsys.readouterr().err
