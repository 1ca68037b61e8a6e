"""The one pixel limit, Pillow's own limit, the URL deadline and download size, and the memory of big images."""
from __future__ import annotations

import http.server
import io
import struct
import threading
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from modelscope_facemask.errors import ConfigurationError, ImageLoadError
from modelscope_facemask.faces import images as images_module
from modelscope_facemask.faces.detector import MEAN, DetectionSettings, network_input_size, network_planes
from modelscope_facemask.faces.images import load_image


def gradient(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 5 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) with a few bytes of data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ pixel limit
@pytest.fixture
def limit_1000(monkeypatch):
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "1000")


def every_kind_of_input(tmp_path: Path, rgb: np.ndarray, url: str | None = None) -> list:
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    kinds = [str(tmp_path / "a.png"), tmp_path / "a.jpg", (tmp_path / "a.png").read_bytes(), Image.fromarray(rgb),
             Image.open(tmp_path / "a.png"), rgb[:, :, ::-1], rgb[:, :, 0], rgb.astype(np.uint16) * 257,
             {"image": str(tmp_path / "a.png")}]
    return kinds + ([url] if url else [])


def test_one_pixel_limit_for_every_kind_of_input(tmp_path, limit_1000, serve):
    rgb = gradient(30, 40)  # 1200 px
    Image.fromarray(rgb).save(tmp_path / "served.png")
    url = serve(lambda handler: handler.send_body((tmp_path / "served.png").read_bytes()))
    for source in every_kind_of_input(tmp_path, rgb, url):
        with pytest.raises(ImageLoadError) as info:
            load_image(source)
        message = str(info.value)
        for fragment in ("40x30", "1,200 pixels", "limit of 1,000 pixels", "FACEMASK_MAX_IMAGE_PIXELS",
                         "MAX_IMAGE_PIXELS"):
            assert fragment in message, (type(source), message)


def test_images_at_the_limit_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "1200")
    rgb = gradient(30, 40)
    for source in every_kind_of_input(tmp_path, rgb):
        assert load_image(source).shape == (30, 40, 3)


def test_module_constant_sets_the_limit_when_no_environment_variable(monkeypatch):
    monkeypatch.delenv("FACEMASK_MAX_IMAGE_PIXELS", raising=False)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="limit of 1,000 pixels"):
        load_image(gradient(30, 40))


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1e3x"])
def test_bad_environment_values_are_configuration_errors(monkeypatch, value):
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", value)
    with pytest.raises(ConfigurationError, match="FACEMASK_MAX_IMAGE_PIXELS"):
        load_image(gradient(3, 4))


def test_decompression_bomb_refused_from_the_header_with_the_size():
    """A 100000x100000 header: refused by our limit before decoding (was Pillow's error, reported as a bad file)."""
    bomb = png_header_only(100_000, 100_000)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError) as info:
        load_image(bomb)
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "100000x100000" in message and "limit of 200,000,000 pixels" in message
    assert "valid JPEG" not in message


def test_pillow_limit_neither_warns_nor_refuses_below_ours(monkeypatch):
    """Pillow's own (process-wide) limit does not contradict ours, and is restored afterwards."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would now warn above 100 px, refuse above 200 px
    data = io.BytesIO()
    Image.fromarray(gradient(30, 40)).save(data, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        assert load_image(data.getvalue()).shape == (30, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_pillow_limit_restored_after_concurrent_loads(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 12345)
    data = io.BytesIO()
    Image.fromarray(gradient(300, 400)).save(data, format="PNG")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                load_image(data.getvalue())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and Image.MAX_IMAGE_PIXELS == 12345


# ------------------------------------------------------------------------------------------------ URLs
class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """Runs the server's script (a function of the handler) for every GET."""

    script = None
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        try:
            type(self).script(self)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def send_body(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(script) -> URL of a loopback server running script(handler) per request."""
    servers = []

    def start(script) -> str:
        handler = type("Handler", (ScriptedHandler,), {"script": staticmethod(script)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/image.png"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def drip_body(interval: float, stop: threading.Event):
    def script(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        while not stop.is_set():  # one byte per interval: no single read ever times out
            handler.wfile.write(b"\x89")
            handler.wfile.flush()
            time.sleep(interval)
    return script


def test_slow_body_fails_at_the_total_deadline(serve, monkeypatch):
    monkeypatch.setenv("FACEMASK_URL_DEADLINE_S", "2")
    stop = threading.Event()
    url = serve(drip_body(0.5, stop))
    start = time.perf_counter()
    try:
        with pytest.raises(ImageLoadError) as info:
            load_image(url)
        elapsed = time.perf_counter() - start
        # the abandoned download stops too (its socket is shut), while the server is still sending
        for _ in range(20):
            if not any(t.name == "facemask-download" and t.is_alive() for t in threading.enumerate()):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download thread is still running after the deadline")
    finally:
        stop.set()
    assert 1.9 < elapsed < 3.5, elapsed
    message = str(info.value)
    assert "image.png" in message and "within 2 s" in message and "FACEMASK_URL_DEADLINE_S" in message


def test_slow_headers_fail_at_the_total_deadline(serve, monkeypatch):
    monkeypatch.setenv("FACEMASK_URL_DEADLINE_S", "2")
    stop = threading.Event()

    def script(handler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not stop.is_set():  # a header line that never ends
            handler.wfile.write(b"X")
            handler.wfile.flush()
            time.sleep(0.3)

    url = serve(script)
    start = time.perf_counter()
    try:
        with pytest.raises(ImageLoadError, match="within 2 s"):
            load_image(url)
        assert time.perf_counter() - start < 3.5
    finally:
        stop.set()


def test_announced_size_over_the_limit_is_refused_before_reading(serve, monkeypatch):
    monkeypatch.setenv("FACEMASK_MAX_DOWNLOAD_BYTES", "100000")
    sent = []

    def script(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(2 * 1024**3))
        handler.end_headers()
        for _ in range(20):
            handler.wfile.write(b"\0" * 65536)
            sent.append(65536)

    url = serve(script)
    with pytest.raises(ImageLoadError) as info:
        load_image(url)
    message = str(info.value)
    assert "announces 2,147,483,648 bytes" in message and "limit of 100,000 bytes" in message
    assert "FACEMASK_MAX_DOWNLOAD_BYTES" in message


def test_unannounced_body_is_cut_at_the_limit(serve, monkeypatch):
    """No Content-Length (read until the server closes): counted while streaming, stopped past the limit."""
    monkeypatch.setenv("FACEMASK_MAX_DOWNLOAD_BYTES", "100000")
    stop = threading.Event()
    sent = [0]

    def script(handler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        while not stop.is_set() and sent[0] < 50 * 1024**2:
            handler.wfile.write(b"\0" * 8192)
            sent[0] += 8192

    url = serve(script)
    try:
        with pytest.raises(ImageLoadError, match="sent more than 100,000 bytes"):
            load_image(url)
    finally:
        stop.set()
    assert sent[0] < 10 * 1024**2  # it stopped reading long before the server ran out


def test_download_within_limits_still_works(serve, monkeypatch):
    monkeypatch.setenv("FACEMASK_MAX_DOWNLOAD_BYTES", "100000")
    data = io.BytesIO()
    Image.fromarray(gradient(30, 40)).save(data, format="PNG")
    url = serve(lambda handler: handler.send_body(data.getvalue()))
    assert np.array_equal(load_image(url), gradient(30, 40))


# ------------------------------------------------------------------------------------------------ memory
def reference_network_input(image_rgb: np.ndarray, channel_order: str) -> np.ndarray:
    """ModelScope's RetinaFaceDetection.forward pre-processing, line for line, as (3, h, w)."""
    img = np.float32(image_rgb if channel_order == "RGB" else image_rgb[:, :, ::-1])
    if max(img.shape[:2]) > 1500:
        ss = 1000.0 / max(img.shape[:2])
        img = cv2.resize(img, (0, 0), fx=ss, fy=ss)
    img -= (104, 117, 123)
    return img.transpose(2, 0, 1)


@pytest.mark.parametrize("size", [(480, 640), (1500, 1499), (1501, 900), (2000, 1000), (1001, 2000), (3001, 1999),
                                  (4000, 30), (2200, 3), (1600, 1), (7, 3100)])
@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_network_planes_bit_identical_to_the_reference(size, channel_order):
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    planes, _ = network_planes(image, DetectionSettings(), channel_order)
    reference = reference_network_input(image, channel_order)
    assert planes.shape == reference.shape == (3, *network_input_size(*size, DetectionSettings()))
    assert planes.dtype == np.float32 and np.array_equal(planes, reference)
    assert MEAN == (104.0, 117.0, 123.0)


def test_array_to_network_input_peak_memory():
    """Loading a BGR array and building the detector input: 7 bytes per pixel (3 RGB + 4 one float channel) plus
    the network input and one resized channel; converting the whole image to float32 first, as before, needs 15."""
    bgr = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        rgb = load_image(bgr)
        planes, _ = network_planes(rgb, DetectionSettings(), "BGR")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = bgr.shape[0] * bgr.shape[1]
    assert peak <= 7 * pixels + planes.nbytes * 4 / 3 + 2**20, peak / pixels
