"""ModelScope's own hub client (modelscope 1.40.2 / modelscope_hub) against the loopback HubEmulator.

Each test gets its own emulator, MODELSCOPE_CACHE and MODELSCOPE_HOME. The environment is set with monkeypatch and
modelscope_hub's cached config is reset before and after, as the emulator's module docstring prescribes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.testing.hub_emulator import HubEmulator, HubRequest, hub_environment, reset_hub_config

TOKEN = "emulator-token-123"
CONFIG = {"framework": "pytorch", "task": "face-recognition",
          "pipeline": {"type": "resnet-face-recognition-facemask"}}


def _bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running emulator (token-protected writes) with the process environment pointed at it."""
    with HubEmulator(tmp_path / "hub-root", token=TOKEN) as emulator:
        for key, value in hub_environment(emulator, tmp_path / "ms-cache", tmp_path / "ms-home").items():
            monkeypatch.setenv(key, value)
        reset_hub_config()
        yield emulator
    reset_hub_config()


def _fresh_cache(tmp_path: Path, monkeypatch, name: str) -> Path:
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / name))
    reset_hub_config()
    return tmp_path / name


def test_hub_environment_names_the_emulator(tmp_path):
    with HubEmulator(token=TOKEN) as emulator:
        env = hub_environment(emulator, tmp_path / "c", tmp_path / "h")
        assert env["MODELSCOPE_ENDPOINT"] == emulator.endpoint
        assert emulator.endpoint.startswith("http://127.0.0.1:")
        assert env["MODELSCOPE_CACHE"] == str((tmp_path / "c").resolve())
        assert env["MODELSCOPE_HOME"] == str((tmp_path / "h").resolve())
        assert env["MODELSCOPE_API_TOKEN"] == TOKEN
        assert env["MODELSCOPE_DOWNLOAD_INTRA_CLOUD"] == "false"
        root = emulator.root
    assert not root.exists()  # a temporary root goes away with the emulator


def test_snapshot_download_gives_identical_files(hub, tmp_path):
    from modelscope.hub.snapshot_download import snapshot_download

    files = {"configuration.json": json.dumps(CONFIG).encode(), "pytorch_model.pt": _bytes(100_000, 1),
             "nested/deeper/notes.txt": b"nested file\n"}
    hub.add_repo("owner-a/model-a", files)
    local = Path(snapshot_download("owner-a/model-a"))
    assert local.is_relative_to(tmp_path / "ms-cache")
    assert _tree(local) == files
    listing, *downloads = hub.requests
    assert listing == HubRequest("GET", "/api/v1/models/owner-a/model-a/repo/files",
                                 {"Revision": "master", "Recursive": "True"})
    assert sorted(downloads, key=repr) == sorted(
        (HubRequest("GET", "/api/v1/models/owner-a/model-a/repo", {"Revision": "master", "FilePath": path})
         for path in files), key=repr)

    hub.requests.clear()
    assert Path(snapshot_download("owner-a/model-a")) == local  # cached: sizes and sha256 of the listing match
    assert [r.path for r in hub.requests] == ["/api/v1/models/owner-a/model-a/repo/files"]


def test_unknown_repo_is_a_404(hub):
    import requests
    from modelscope.hub.api import HubApi
    from modelscope.hub.snapshot_download import snapshot_download

    with pytest.raises(requests.HTTPError, match="does not exist"):
        snapshot_download("owner-a/missing")
    assert HubApi().repo_exists("owner-a/missing") is False
    hub.add_repo("owner-a/present", {"configuration.json": b"{}"})
    assert HubApi().repo_exists("owner-a/present") is True


def _upload_folder(tmp_path: Path) -> dict[str, bytes]:
    files = {
        "configuration.json": json.dumps(CONFIG).encode(),  # always inline
        "README.md": b"# FaceMask test model\n",  # always inline
        "pytorch_model.pt": _bytes(3_000, 2),  # LFS by suffix
        "weights/blob.dat": _bytes(70_000, 3),  # LFS by size (> 64 KiB)
        "weights/small.txt": b"inline nested file\n",  # inline
    }
    for rel, data in files.items():
        (tmp_path / "upload" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "upload" / rel).write_bytes(data)
    return files


def test_upload_folder_then_snapshot_download_roundtrip(hub, tmp_path, monkeypatch):
    from modelscope.hub.api import HubApi
    from modelscope.hub.snapshot_download import snapshot_download

    files = _upload_folder(tmp_path)
    HubApi().upload_folder(repo_id="owner-b/pushed", folder_path=str(tmp_path / "upload"))

    assert _tree(hub.repo_dir("owner-b/pushed")) == files
    (commit,) = hub.commits
    assert sorted((path, mode) for _, path, mode in commit.actions) == [
        ("README.md", "normal"), ("configuration.json", "normal"), ("pytorch_model.pt", "lfs"),
        ("weights/blob.dat", "lfs"), ("weights/small.txt", "normal")]
    lfs_oids = {_sha(files["pytorch_model.pt"]), _sha(files["weights/blob.dat"])}
    puts = [r for r in hub.requests if r.method == "PUT"]
    assert {r.path.rsplit("/", 1)[1] for r in puts} == lfs_oids
    assert [(r.method, r.path) for r in hub.requests if r.method != "PUT"] == [
        ("POST", "/api/v1/models"),
        ("POST", "/api/v1/repos/models/owner-b/pushed/info/lfs/objects/batch"),
        ("POST", "/api/v1/repos/models/owner-b/pushed/commit/master"),
    ]

    _fresh_cache(tmp_path, monkeypatch, "second-cache")
    assert _tree(Path(snapshot_download("owner-b/pushed"))) == files


def test_push_model_to_existing_repo_updates_files(hub, tmp_path):
    from modelscope.hub.api import HubApi

    hub.add_repo("owner-b/existing", {"configuration.json": b"{}", "old.txt": b"stays"})
    files = _upload_folder(tmp_path)
    HubApi().push_model("owner-b/existing", str(tmp_path / "upload"))
    creates = [r for r in hub.requests if (r.method, r.path) == ("POST", "/api/v1/models")]
    assert len(creates) == 2  # push_model creates, then upload_folder creates again; both hear "already exists"
    assert _tree(hub.repo_dir("owner-b/existing")) == {**files, "old.txt": b"stays"}


def test_writes_need_the_token(hub, tmp_path, monkeypatch):
    from modelscope.hub.api import HubApi
    from modelscope_hub.errors import AlreadyExistsError, AuthenticationError

    monkeypatch.delenv("MODELSCOPE_API_TOKEN")
    reset_hub_config()
    with pytest.raises(AuthenticationError):
        HubApi().create_repo("owner-c/denied")
    assert not hub.repo_dir("owner-c/denied").exists()
    api = HubApi()
    api.login(TOKEN)
    api.create_repo("owner-c/allowed")
    with pytest.raises(AlreadyExistsError):
        api.create_repo("owner-c/allowed")
    assert api.create_repo("owner-c/allowed", exist_ok=True) is None
