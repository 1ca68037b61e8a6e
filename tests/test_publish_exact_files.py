"""`facemask publish` sends exactly the upload plan (the manifest's files and manifest.json) to either hub, through
the hubs' own clients (ModelScope's HubApi, huggingface_hub's HfApi) against the loopback emulators (issue 19, item 2).

A packed folder with ``.env``, ``.ssh/id_rsa`` and ``.passwd -> <a file outside>`` used to list 7 files in the dry
run while ModelScope's ``upload_folder`` sent 10 (it uploads everything but ``.git``/``.cache`` and follows links),
and the publish still said "verified". Now such a folder is refused, naming every offending path, before a single
request; a stray unlisted file (``notes.txt``) is refused the same way rather than silently left out.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from modelscope_facemask.cli import main
from modelscope_facemask.model_files.manifest import MANIFEST_FILE, file_sha256, read_manifest
from modelscope_facemask.tools.hub.publish import PublishError, staged_upload, upload_plan
from modelscope_facemask.testing.hf_hub_emulator import HfHubEmulator, hf_environment, patch_hf_constants
from modelscope_facemask.testing.hub_emulator import HubEmulator, hub_environment, reset_hub_config

from .test_hf_hub import packed  # noqa: F401  (the packed folder fixture, one per session)

MS_TOKEN = "emulator-token-exact"
HF_TOKEN = "hf_EmulatorOnlyExactFiles0123456"
REPO = "facemask-test/exact"


@dataclass
class Hub:
    """One emulated hub as the tests see it: the CLI arguments that select it, and what it holds."""

    name: str
    args: list[str]
    request_count: Callable[[], int]
    files: Callable[[str], dict[str, bytes]]  # {} when the repository does not exist
    plant: Callable[[str, dict[str, bytes]], None]  # an earlier upload's files, put there with the hub's client


@pytest.fixture(params=["modelscope", "huggingface"])
def hub(request, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if request.param == "modelscope":
        with HubEmulator(tmp_path / "hub-root", token=MS_TOKEN) as emulator:
            for key, value in hub_environment(emulator, tmp_path / "ms-cache", tmp_path / "ms-home").items():
                monkeypatch.setenv(key, value)
            reset_hub_config()

            def ms_files(repo: str) -> dict[str, bytes]:
                folder = emulator.repo_dir(repo)
                return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

            def ms_plant(repo: str, files: dict[str, bytes]) -> None:
                from modelscope.hub.api import HubApi

                api = HubApi(token=MS_TOKEN)
                for rel, data in files.items():
                    api.upload_file(repo_id=repo, path_or_fileobj=data, path_in_repo=rel)

            yield Hub("modelscope", [], lambda: len(emulator.requests), ms_files, ms_plant)
        reset_hub_config()
    else:
        with HfHubEmulator(token=HF_TOKEN) as emulator:
            monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
            patch_hf_constants(monkeypatch, hf_environment(emulator, tmp_path / "hf-cache", HF_TOKEN))

            def hf_plant(repo: str, files: dict[str, bytes]) -> None:
                from huggingface_hub import HfApi

                api = HfApi(token=HF_TOKEN)
                api.create_repo(repo, exist_ok=True)
                for rel, data in files.items():
                    api.upload_file(repo_id=repo, path_or_fileobj=data, path_in_repo=rel)

            yield Hub("huggingface", ["--hub", "huggingface"], lambda: len(emulator.requests),
                      lambda repo: emulator.repo_files(repo) if repo in emulator.repos else {}, hf_plant)


def _copy(packed: Path, folder: Path) -> Path:
    """A copy of the packed folder (hard links: cheap; a test that changes a file replaces it, never writes into it)."""
    shutil.copytree(packed, folder, copy_function=os.link)
    return folder


def _hostile(packed: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The issue's folder: a secret, a private key and a link to a file outside; (folder, the outside file)."""
    folder = _copy(packed, tmp_path / "repo")
    (folder / ".env").write_text("API_KEY=sk-live-do-not-publish\n")
    (folder / ".ssh").mkdir()
    (folder / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    outside = tmp_path / "outside" / "passwd"
    outside.parent.mkdir()
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (folder / ".passwd").symlink_to(outside)
    return folder, outside


def _dry_run_paths(out: str) -> set[str]:
    """The repository paths a dry run's listing names (lines ``  SIZE  [LFS|inline]  PATH``)."""
    return {line.split()[-1] for line in out.splitlines() if re.match(r"^ +[\d,]+  ", line) and "total:" not in line}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_hostile_folder_is_refused_before_any_request(hub, packed, tmp_path, capsys):
    folder, outside = _hostile(packed, tmp_path)
    for mode in (["--dry-run"], []):
        start = hub.request_count()
        assert main(["publish", str(folder), "--model-id", REPO, *hub.args, *mode]) == 2, mode
        err = capsys.readouterr().err
        assert f"{str(folder)!r} cannot be published" in err
        assert "hidden files or folders, which are never published and may hold secrets (.env, .ssh/id_rsa)" in err
        assert f"symbolic links, which are never followed nor published (.passwd -> {outside} (outside the folder))" \
            in err
        assert "Remove them or move them out of the folder" in err and "nothing was uploaded" in err
        assert "Traceback" not in err
        assert hub.request_count() == start  # not one request: no repository created, nothing sent
        assert hub.files(REPO) == {}


def test_a_stray_unlisted_file_is_refused_not_skipped(hub, packed, tmp_path, capsys):
    folder = _copy(packed, tmp_path / "repo")
    (folder / "notes.txt").write_text("not packed")
    (folder / "retinaface_mobilenet0.25" / "old.bin").write_bytes(b"\0" * 10)
    start = hub.request_count()
    assert main(["publish", str(folder), "--model-id", REPO, *hub.args]) == 2
    assert "files its manifest does not list (notes.txt, retinaface_mobilenet0.25/old.bin)" in capsys.readouterr().err
    assert hub.request_count() == start and hub.files(REPO) == {}


@pytest.mark.parametrize("kind", ["packed", "hostile"])
def test_the_dry_run_lists_exactly_what_the_hub_receives(hub, packed, tmp_path, kind, capsys):
    folder = _copy(packed, tmp_path / "repo") if kind == "packed" else _hostile(packed, tmp_path)[0]
    dry_code = main(["publish", str(folder), "--model-id", REPO, *hub.args, "--dry-run"])
    listed = _dry_run_paths(capsys.readouterr().out)
    code = main(["publish", str(folder), "--model-id", REPO, *hub.args])
    out = capsys.readouterr().out
    uploaded = hub.files(REPO)
    assert set(uploaded) == listed  # before the fix, on ModelScope: 7 listed, 10 uploaded (.env, .ssh/id_rsa, .passwd)
    if kind == "hostile":
        assert (dry_code, code, uploaded) == (2, 2, {})
        return
    assert (dry_code, code) == (0, 0)
    plan = upload_plan(folder)
    assert listed == {item.path for item in plan} == set(read_manifest(folder)) | {MANIFEST_FILE}
    assert uploaded == _tree(folder)  # the planned files with the packed bytes, nothing else
    assert "verified: all 6 manifest files on the hub" in out and "note:" not in out


def test_extra_files_on_the_hub_are_reported_hidden_ones_too(hub, packed, capsys):
    hub.plant(REPO, {".env": b"SECRET=from-an-earlier-upload\n", "old-notes.txt": b"earlier"})
    assert main(["publish", str(packed), "--model-id", REPO, *hub.args]) == 0
    out = capsys.readouterr().out
    for extra in (".env", "old-notes.txt"):
        assert f"note: the hub also holds {extra}, which is not part of this upload of {packed}" in out
    assert "; 2 other file(s) on the hub, listed above" in out
    assert ("--sync deletes such files" in out) == (hub.name == "modelscope")
    if hub.name == "modelscope":  # --sync deletes them: then the hub holds exactly the plan
        assert main(["publish", str(packed), "--model-id", REPO, "--sync"]) == 0
        assert "note:" not in capsys.readouterr().out
        assert hub.files(REPO) == _tree(packed)


def _link_in_folder(folder: Path, outside: Path) -> str:
    (folder / "weights-alias.pt").symlink_to("pytorch_model.pt")
    return "weights-alias.pt -> pytorch_model.pt (inside the folder)"


def _listed_file_as_link(folder: Path, outside: Path) -> str:
    """The manifest check alone passes: the link's target has the listed bytes. Still a link: refused."""
    shutil.copyfile(folder / "README.md", outside)
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(outside)
    return f"symbolic links, which are never followed nor published (README.md -> {outside} (outside the folder))"


def _linked_folder(folder: Path, outside: Path) -> str:
    outside.mkdir()
    (outside / "id_ed25519").write_text("key")
    (folder / "keys").symlink_to(outside, target_is_directory=True)
    return f"keys -> {outside} (outside the folder)"


def _empty_hidden_folder(folder: Path, outside: Path) -> str:
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    return "may hold secrets (.cache/huggingface/)"


def _fifo(folder: Path, outside: Path) -> str:
    os.mkfifo(folder / "pipe")
    return "entries that are not regular files (pipe)"


def _manifest_lists_a_file_outside(folder: Path, outside: Path) -> str:
    """A manifest may name ``../outside`` with the right sha256 and size: it is not a file of the folder."""
    outside.write_text("root:x:0:0\n")
    manifest = folder / MANIFEST_FILE
    data = json.loads(manifest.read_text())
    data["files"][f"../{outside.name}"] = {"sha256": file_sha256(outside), "size": outside.stat().st_size}
    manifest.unlink()  # a hard link to the packed one: replace it, never write through it
    manifest.write_text(json.dumps(data))
    return f"its {MANIFEST_FILE} lists files that are not regular files in it (../{outside.name})"


@pytest.mark.parametrize("mutate", [_link_in_folder, _listed_file_as_link, _linked_folder, _empty_hidden_folder,
                                    _fifo, _manifest_lists_a_file_outside], ids=lambda f: f.__name__.strip("_"))
def test_upload_plan_refuses_links_and_odd_entries_by_name(packed, tmp_path, mutate):
    folder = _copy(packed, tmp_path / "repo")
    expected = mutate(folder, tmp_path / "outside")
    with pytest.raises(PublishError, match=re.escape(expected)) as refused:
        upload_plan(folder)
    assert f"{str(folder)!r} cannot be published" in str(refused.value)
    assert "nothing was uploaded" in str(refused.value)


def test_a_file_changed_after_the_plan_is_not_staged(packed, tmp_path):
    folder = _copy(packed, tmp_path / "repo")
    plan = upload_plan(folder)
    with staged_upload(folder, plan) as staged:  # unchanged: exactly the plan, as regular files
        assert _tree(staged) == _tree(folder) and not any(p.is_symlink() for p in staged.rglob("*"))
    assert not staged.exists()  # removed afterwards
    readme = folder / "README.md"
    data = bytearray(readme.read_bytes())
    data[-2] ^= 0x01  # same size, other bytes
    readme.unlink()
    readme.write_bytes(bytes(data))
    with pytest.raises(PublishError, match=re.escape(f"{str(folder)!r} changed while it was being published "
                                                     "(README.md)")):
        with staged_upload(folder, plan):
            pytest.fail("a changed file was staged")
    readme.unlink()
    shutil.copyfile(packed / "README.md", readme)  # as packed again, but now the manifest changes
    manifest = folder / MANIFEST_FILE
    text = manifest.read_text()
    manifest.unlink()
    manifest.write_text(text + " ")
    with pytest.raises(PublishError, match=re.escape(f"being published ({MANIFEST_FILE})")):
        with staged_upload(folder, plan):
            pytest.fail("a changed manifest was staged")
    manifest.unlink()
    manifest.write_text(text)
    readme.unlink()
    readme.symlink_to(packed / "README.md")  # the same bytes, but through a link now
    with pytest.raises(PublishError, match="stopped being a regular file while publishing"):
        with staged_upload(folder, plan):
            pytest.fail("a link was staged")
