"""load_image against ModelScope's LoadImage.convert_to_ndarray, and its errors."""
from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelscope.preprocessors.image import LoadImage

from modelscope_facemask.errors import ImageLoadError
from modelscope_facemask.faces.images import describe_source, load_image

EXIF_ORIENTATION = 0x0112


def smooth_rgb(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def expected(source) -> np.ndarray:
    return np.asarray(LoadImage.convert_to_ndarray(source))


def assert_rgb_equal(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == np.uint8 and ours.ndim == 3 and ours.shape[2] == 3
    assert ours.flags["C_CONTIGUOUS"]
    assert np.array_equal(ours, reference)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """JPEG/PNG files: plain, with EXIF orientations 2-8, gray, palette, RGBA, 16-bit gray, CMYK."""
    folder = tmp_path_factory.mktemp("images")
    rgb = Image.fromarray(smooth_rgb(48, 64, 0))
    rgb.save(folder / "plain.png")
    rgb.save(folder / "plain.jpg", quality=90)
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        rgb.save(folder / f"exif{orientation}.jpg", quality=90, exif=exif)
        rgb.save(folder / f"exif{orientation}.png", exif=exif)
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.png")
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.linspace(0, 255, 48 * 64).reshape(48, 64).astype(np.uint8)))
    rgba.save(folder / "rgba.png")
    Image.fromarray(GRAY16).save(folder / "gray16.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    return folder


#: 16-bit gray with every low byte (not only the x * 257 values of an expanded 8-bit image)
GRAY16 = (smooth_rgb(48, 64, 1)[..., 0].astype(np.uint16) * 256 + smooth_rgb(48, 64, 2)[..., 1]).astype(np.uint16)

FILES = ["plain.png", "plain.jpg", *[f"exif{o}.jpg" for o in range(2, 9)], "exif6.png", "exif5.png", "gray.png",
         "palette.png", "rgba.png", "cmyk.jpg"]


@pytest.mark.parametrize("name", FILES)
def test_path_str_pathlib_bytes_dict(image_dir, name):
    path = image_dir / name
    reference = expected(str(path))
    assert_rgb_equal(load_image(str(path)), reference)
    assert_rgb_equal(load_image(path), reference)
    assert_rgb_equal(load_image(path.read_bytes()), reference)
    assert_rgb_equal(load_image(bytearray(path.read_bytes())), reference)
    assert_rgb_equal(load_image({"image": str(path)}), expected({"image": str(path)}))


def test_exif_orientation_is_applied(image_dir):
    plain = load_image(image_dir / "plain.png")
    rotated = load_image(image_dir / "exif6.png")
    assert rotated.shape == (64, 48, 3)
    assert np.array_equal(rotated, np.rot90(plain, k=-1))


@pytest.mark.parametrize("name", FILES)
def test_pil_images(image_dir, name):
    with Image.open(image_dir / name) as img:
        img.load()
        assert_rgb_equal(load_image(img), expected(img))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "I", "F", "1", "YCbCr"])
def test_pil_modes_in_memory(mode):
    img = Image.fromarray(smooth_rgb(20, 30, 2)).convert(mode)
    assert_rgb_equal(load_image(img), expected(img))


def test_bgr_arrays():
    bgr = smooth_rgb(40, 50, 3)
    assert_rgb_equal(load_image(bgr), expected(bgr))
    view = np.asfortranarray(smooth_rgb(60, 80, 4))[5:45:2, 10:70:3]  # non-contiguous input
    assert_rgb_equal(load_image(view), expected(view))
    gray = smooth_rgb(40, 50, 5)[..., 1]
    assert_rgb_equal(load_image(gray), expected(gray))
    assert_rgb_equal(load_image(gray[:, :, None]), expected(gray))
    bgra = np.concatenate([bgr, np.full((40, 50, 1), 7, np.uint8)], axis=2)
    assert_rgb_equal(load_image(bgra), expected(bgr))
    assert_rgb_equal(load_image({"image": bgr}), expected(bgr))


def test_array_result_does_not_alias_input():
    bgr = smooth_rgb(10, 10, 6)
    out = load_image(bgr)
    out[:] = 0
    assert bgr.any()


@pytest.fixture(scope="module")
def http_root(image_dir):
    """A loopback HTTP server serving image_dir; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(image_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("name", ["plain.jpg", "exif8.jpg", "palette.png"])
def test_url(http_root, name):
    url = f"{http_root}/{name}"
    assert_rgb_equal(load_image(url), expected(url))


def test_url_not_found_names_the_url(http_root):
    url = f"{http_root}/missing.jpg"
    with pytest.raises(ImageLoadError, match="missing.jpg") as info:
        load_image(url)
    assert "404" in str(info.value)


def test_url_not_an_image(http_root, image_dir):
    (image_dir / "note.txt").write_text("not an image")
    with pytest.raises(ImageLoadError, match="note.txt"):
        load_image(f"{http_root}/note.txt")


def bad_inputs(tmp_path: Path) -> list[tuple[object, str]]:
    """(input, a fragment its error must contain)."""
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 definitely not a jpeg")
    truncated = io.BytesIO()
    Image.fromarray(smooth_rgb(64, 64, 7)).save(truncated, format="PNG")
    big = np.zeros((2000, 2000, 3), np.float32)
    return [
        (str(tmp_path / "missing.png"), "missing.png"),
        (tmp_path / "missing.png", "missing.png"),
        (str(tmp_path), str(tmp_path.name)),
        (str(garbage), "garbage.jpg"),
        (b"not an image at all", "19 bytes"),
        (truncated.getvalue()[:200], "200 bytes"),
        (b"", "0 bytes"),
        (12345, "int"),
        ([1, 2, 3], "list"),
        (None, "NoneType"),
        (big, "float32"),
        (np.zeros((4, 4, 3), np.int16), "int16"),
        (np.zeros((4, 4, 3), np.uint32), "uint32"),
        (np.zeros((4, 4, 3), bool), "bool"),
        (np.zeros((4, 4, 3, 1), np.uint8), "(4, 4, 3, 1)"),
        (np.zeros((4,), np.uint8), "(4,)"),
        (np.zeros((4, 4, 2), np.uint8), "(4, 4, 2)"),
        (np.zeros((0, 5, 3), np.uint8), "(0, 5, 3)"),
        ({"img": "x.png"}, "'img'"),
        ({"image": 3.5}, "float"),
    ]


def test_bad_inputs_raise_image_load_error_naming_the_input(tmp_path):
    for source, fragment in bad_inputs(tmp_path):
        with pytest.raises(ImageLoadError) as info:
            load_image(source)
        message = str(info.value)
        assert fragment in message, (fragment, message)
        assert len(message) < 600, message  # never dumps array contents


def test_describe_source_is_short():
    assert describe_source("a.jpg") == "'a.jpg'"
    assert describe_source(Path("a.jpg")) == "'a.jpg'"
    assert len(describe_source("x" * 10_000)) <= 125
    assert describe_source(b"123") == "<bytes of 3 bytes>"
    assert describe_source(np.zeros((3000, 3000, 3), np.uint8)) == "<ndarray shape=(3000, 3000, 3) dtype=uint8>"
    assert describe_source(Image.new("RGB", (4, 3))) == "<PIL.Image mode=RGB size=4x3>"
    assert "image='a.jpg'" in describe_source({"image": "a.jpg"})


# ------------------------------------------------------------------------------------------------ 16-bit data
def test_16_bit_gray_png_keeps_the_high_byte(image_dir, http_root):
    """ModelScope clips 16-bit gray to 255 (an almost white image); we keep value >> 8 everywhere."""
    path = image_dir / "gray16.png"
    expected8 = np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")  # the case that went wrong
        assert_rgb_equal(load_image(img), expected8)  # lazily opened PIL image
    for source in (str(path), path, path.read_bytes(), {"image": str(path)}, f"{http_root}/gray16.png"):
        assert_rgb_equal(load_image(source), expected8)
    assert expected(str(path)).mean() > 250 > expected8.mean() + 100  # what ModelScope's loader gives instead


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_pil_modes(mode):
    if mode == "I;16B":
        img = Image.frombytes(mode, GRAY16.shape[::-1], GRAY16.astype(">u2").tobytes())
    else:
        img = Image.fromarray(GRAY16).convert(mode)
    assert img.mode == mode
    assert_rgb_equal(load_image(img), np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2))


def test_mode_i_with_8_bit_values_is_unchanged_and_out_of_range_values_refused():
    gray8 = smooth_rgb(20, 30, 9)[..., 0]
    img = Image.fromarray(gray8).convert("I")
    assert_rgb_equal(load_image(img), expected(img))
    assert_rgb_equal(load_image(img), np.repeat(gray8[:, :, None], 3, axis=2))
    for values in (gray8.astype(np.int32) - 1, gray8.astype(np.int32) * 1000):
        with pytest.raises(ImageLoadError, match="neither 8-bit nor 16-bit"):
            load_image(Image.fromarray(values.astype(np.int32), mode="I"))


def test_uint16_arrays_keep_the_high_byte():
    bgr16 = np.stack([GRAY16, GRAY16[::-1], GRAY16[:, ::-1]], axis=-1)
    rgb8 = (bgr16[:, :, ::-1] >> 8).astype(np.uint8)
    assert_rgb_equal(load_image(bgr16), rgb8)
    assert_rgb_equal(load_image(bgr16.astype(">u2")), rgb8)  # byte order does not matter
    bgra16 = np.concatenate([bgr16, np.full(bgr16.shape[:2] + (1,), 65535, np.uint16)], axis=2)
    assert_rgb_equal(load_image(bgra16), rgb8)
    assert_rgb_equal(load_image(GRAY16), np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
    # an 8-bit image expanded to 16 bits (x * 257) comes back exactly
    bgr8 = smooth_rgb(30, 40, 8)
    assert_rgb_equal(load_image(bgr8.astype(np.uint16) * 257), load_image(bgr8))


# ------------------------------------------------------------------------------------------------ odd inputs
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself warns
def test_array_subclasses():
    gray = smooth_rgb(20, 30, 10)[..., 0]
    assert_rgb_equal(load_image(np.matrix(gray)), load_image(gray))
    bgr = smooth_rgb(20, 30, 11)
    assert_rgb_equal(load_image(np.ma.MaskedArray(bgr)), load_image(bgr))  # nothing masked: used as is
    masked = np.ma.MaskedArray(bgr, mask=np.zeros_like(bgr, bool))
    masked[3, 4] = np.ma.masked
    with pytest.raises(ImageLoadError, match="masked values"):
        load_image(masked)


def test_memmap_array(tmp_path):
    bgr = smooth_rgb(20, 30, 12)
    mapped = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint8, shape=bgr.shape)
    mapped[:] = bgr
    assert_rgb_equal(load_image(mapped), load_image(bgr))


def test_nested_and_self_referencing_dicts(image_dir):
    path = str(image_dir / "plain.png")
    assert_rgb_equal(load_image({"image": {"image": path}}), load_image(path))
    looped: dict = {}
    looped["image"] = looped
    with pytest.raises(ImageLoadError, match="contains itself"):
        load_image(looped)
    assert len(describe_source(looped)) < 200


def test_truncated_lazy_pil_image_is_an_image_load_error(tmp_path):
    data = io.BytesIO()
    Image.fromarray(smooth_rgb(64, 64, 13)).save(data, format="PNG")
    (tmp_path / "cut.png").write_bytes(data.getvalue()[:300])
    with Image.open(tmp_path / "cut.png") as lazy:  # opens fine: only the header is read
        with pytest.raises(ImageLoadError, match="truncated") as info:
            load_image(lazy)
    assert isinstance(info.value.__cause__, OSError)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(ImageLoadError, match="null byte") as info:
        load_image(str(tmp_path / "a\x00b.png"))
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image("/dev/zero")  # was read until memory ran out
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)  # was a hang: opening a FIFO blocks until a writer comes


def test_pathlike_returning_bytes(image_dir):
    class BytesPath:
        def __fspath__(self) -> bytes:
            return os.fsencode(str(image_dir / "plain.png"))

    assert_rgb_equal(load_image(BytesPath()), load_image(image_dir / "plain.png"))


def test_unexpected_exceptions_become_image_load_errors_chained_to_the_cause():
    class Broken(os.PathLike):
        def __fspath__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(ImageLoadError, match="boom") as info:
        load_image(Broken())
    assert isinstance(info.value.__cause__, RuntimeError)
