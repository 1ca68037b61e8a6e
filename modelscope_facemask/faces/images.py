"""Load any supported image input into one convention: an RGB uint8 (H, W, 3) C-contiguous array.

Mirrors ModelScope's ``LoadImage.convert_to_ndarray``: paths, URLs and encoded bytes are opened with PIL,
EXIF-transposed (as ``ImageOps.exif_transpose``) and converted to RGB; PIL images are converted to RGB (no EXIF
transpose, as in ModelScope); numpy arrays are assumed **BGR** (2-D gray is expanded, a 4th alpha channel dropped);
a dict is read through its ``'image'`` key.

Deliberate differences from ModelScope (which would return wrong pixels or hang):

- 16-bit data (PIL modes ``I;16*``, mode ``I`` holding 0..65535, ``uint16`` arrays) keeps its high byte
  (``value >> 8``, Pillow's own rule for 16-bit RGB PNGs and the exact inverse of the usual ``x * 257`` expansion);
  ModelScope clips it to 255, i.e. an almost white image.
- Limits, each a module constant that an environment variable overrides when set:
  :data:`MAX_IMAGE_PIXELS` (``FACEMASK_MAX_IMAGE_PIXELS``) for every kind of input, checked on the file header
  before any pixel is decoded; :data:`MAX_DOWNLOAD_BYTES` (``FACEMASK_MAX_DOWNLOAD_BYTES``) and
  :data:`URL_DEADLINE_SECONDS` (``FACEMASK_URL_DEADLINE_S``, total time of one download) for URLs.
- Pillow's own process-wide decompression-bomb check (``PIL.Image.MAX_IMAGE_PIXELS``: a warning above 89 M
  pixels, an error above 179 M) is switched off while this module decodes, so that the one limit above decides
  and its error says how to raise it; the previous value is restored when no decode of ours is running.

Memory: decoding holds Pillow's image (up to 4 bytes/pixel) plus the result (3 bytes/pixel); conversions run in
bands of rows, so no other full-size copy is made.

The module's pieces: :mod:`.image_limits` (reading a limit's environment variable, Pillow's limit set aside),
:mod:`.image_sources` (labels for inputs, folder listing) and :mod:`.url_images` (the download); the limits'
constants, their readers and the loading itself are here. Names of the first two are re-exported here.
"""
from __future__ import annotations

import io
import os
import stat
from typing import Any, Callable, Union

import numpy as np
from PIL import Image

from ..errors import FaceMaskError, ImageLoadError
from .image_limits import ENV_MAX_DOWNLOAD_BYTES, ENV_MAX_IMAGE_PIXELS, ENV_URL_DEADLINE, env_limit, own_pixel_limit
from .image_sources import IMAGE_SUFFIXES, image_paths_under, is_image_entry  # noqa: F401  (re-exported)
from .image_sources import as_image_error, describe_source
from .url_images import download_image

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray, dict]

#: Largest accepted image, width x height, for every kind of input (200 M: a 16320x12240 phone sensor fits).
MAX_IMAGE_PIXELS = 200_000_000
#: Largest accepted download of one URL (the encoded file).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Total time one URL download may take (connection, headers and body together).
URL_DEADLINE_SECONDS = 60.0
#: Connect and per-read timeout of one URL download (never more than the deadline left).
URL_TIMEOUT_SECONDS = 30.0

_MAX_DICT_DEPTH = 4
_BAND_PIXELS = 1 << 20  # rows converted per step: about 1 M pixels
_EXIF_ORIENTATION = 0x0112
_ARRAY_FIX = "pass a BGR (H, W, 3), BGRA (H, W, 4) or gray (H, W) array of dtype uint8 (or uint16)"


# ---------------------------------------------------------------------------------------------------- limits
def max_image_pixels() -> int:
    """The pixel limit in force: ``$FACEMASK_MAX_IMAGE_PIXELS`` if set, else :data:`MAX_IMAGE_PIXELS`."""
    return int(env_limit(ENV_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS, int))


def max_download_bytes() -> int:
    """The download size limit in force: ``$FACEMASK_MAX_DOWNLOAD_BYTES`` if set, else :data:`MAX_DOWNLOAD_BYTES`."""
    return int(env_limit(ENV_MAX_DOWNLOAD_BYTES, MAX_DOWNLOAD_BYTES, int))


def url_deadline_seconds() -> float:
    """The total download deadline in force: ``$FACEMASK_URL_DEADLINE_S`` if set, else :data:`URL_DEADLINE_SECONDS`."""
    return float(env_limit(ENV_URL_DEADLINE, URL_DEADLINE_SECONDS, float))


def check_pixel_limit(width: int, height: int, label: str) -> None:
    """Raise :class:`ImageLoadError` when a ``width`` x ``height`` image exceeds :func:`max_image_pixels`."""
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageLoadError(
            f"image {label} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} pixels; "
            f"downscale it, or raise the limit with the environment variable {ENV_MAX_IMAGE_PIXELS} or "
            "modelscope_facemask.faces.images.MAX_IMAGE_PIXELS"
        )

# ---------------------------------------------------------------------------------------------------- loading
def load_image(source: ImageSource) -> np.ndarray:
    """Load ``source`` as an RGB uint8 (H, W, 3) C-contiguous array, pixel-identical to ModelScope's loader.

    Accepted: local path (str or ``os.PathLike``), http(s) URL, encoded image bytes, PIL image, BGR/gray/BGRA
    uint8 (or uint16) ndarray, or ``{'image': <any of these>}``. Raises :class:`ImageLoadError` naming the input
    for anything else, including any unexpected failure while reading it (chained to the original exception).
    """
    try:
        return _load(source)
    except FaceMaskError:
        raise
    except Exception as exc:
        raise as_image_error(exc, source) from exc


def _load(source: Any) -> np.ndarray:
    outer, depth = source, 0
    while isinstance(source, dict):
        if depth == _MAX_DICT_DEPTH:
            raise ImageLoadError(
                f"image input {describe_source(outer)} nests {{'image': {{'image': ...}}}} more than "
                f"{_MAX_DICT_DEPTH} levels deep (or contains itself); pass {{'image': <path, URL, bytes, PIL image "
                "or BGR array>}"
            )
        if "image" not in source:
            raise ImageLoadError(
                f"image input {describe_source(source)} has no 'image' key; pass {{'image': <path, URL, bytes, "
                "PIL image or BGR array>}"
            )
        source, depth = source["image"], depth + 1
    if isinstance(source, os.PathLike):
        source = os.fsdecode(os.fspath(source))
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            return decode_image_bytes(_download(source), label=describe_source(source))
        return _load_file(source)
    if isinstance(source, (bytes, bytearray)):
        return decode_image_bytes(source, label=describe_source(source))
    if isinstance(source, Image.Image):
        return pil_to_rgb(source, label=describe_source(source))
    if isinstance(source, np.ndarray):
        return bgr_array_to_rgb(source)
    raise ImageLoadError(
        f"unsupported image input {describe_source(source)}; pass a local path, an http(s) URL, encoded image "
        "bytes, a PIL image, a BGR uint8 numpy array or {'image': ...}"
    )


def _load_file(path: str) -> np.ndarray:
    label = describe_source(path)
    fix = "check that the path exists and is readable"
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ImageLoadError(f"cannot read image file {label} ({type(exc).__name__}: {reason}); {fix}") from exc
    if stat.S_ISDIR(mode):
        raise ImageLoadError(f"cannot read image file {label}: it is a folder; pass the path of an image file")
    if not stat.S_ISREG(mode):
        raise ImageLoadError(f"cannot read image file {label}: not a regular file (a device, pipe or socket); "
                             "pass the path of an image file")
    try:
        infile = open(path, "rb")
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {label} ({type(exc).__name__}: {exc.strerror or exc}); "
                             f"{fix}") from exc
    with infile:
        return _decode(infile, label)


def decode_image_bytes(data: bytes | bytearray, label: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) like ModelScope: PIL open, EXIF transpose, RGB."""
    with io.BytesIO(data) as infile:
        return _decode(infile, label)


def _decode(infile: io.IOBase, label: str) -> np.ndarray:
    """Open with PIL, check the header's size against the limit, then decode, convert and EXIF-transpose."""
    with own_pixel_limit():
        try:
            img = Image.open(infile)
        except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError, ... on bad data
            raise _decode_error(label, exc) from exc
        try:
            check_pixel_limit(img.width, img.height, label)  # before a single pixel is decoded
            try:
                img.load()
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception as exc:
                raise _decode_error(label, exc) from exc
            rgb = pil_to_rgb(img, label=label)
        finally:
            img.close()  # frees Pillow's copy of the pixels now, before the EXIF transpose copies ours
    return _exif_oriented(rgb, orientation)


def _decode_error(label: str, exc: BaseException) -> ImageLoadError:
    return ImageLoadError(
        f"cannot decode image {label} ({type(exc).__name__}: {exc}); pass a valid JPEG/PNG/BMP/WebP file"
    )


def _exif_oriented(rgb: np.ndarray, orientation: Any) -> np.ndarray:
    """The pixels ``ImageOps.exif_transpose`` gives for EXIF ``orientation`` (1 and unknown values: unchanged)."""
    views: dict[Any, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, k=1),
    }
    view = views.get(orientation)
    return rgb if view is None else np.ascontiguousarray(view(rgb))


def pil_to_rgb(img: Image.Image, label: str = "<PIL.Image>") -> np.ndarray:
    """RGB uint8 array of a PIL image: ``img.convert('RGB')`` as ModelScope, except 16-bit data (high byte).

    Checks the pixel limit first; converts in bands of rows (no full-size intermediate copy). A lazily opened
    image is decoded here, so a truncated file raises :class:`ImageLoadError`.
    """
    width, height = img.size
    check_pixel_limit(width, height, label)
    if width * height == 0:
        raise ImageLoadError(f"image {label} is empty ({width}x{height} px); pass an image with at least one pixel")
    with own_pixel_limit():
        try:
            img.load()
            sixteen_bit = _holds_16_bit(img, label)
            out = np.empty((height, width, 3), np.uint8)
            rows = max(1, _BAND_PIXELS // width)
            for top in range(0, height, rows):
                band = img.crop((0, top, width, min(height, top + rows)))
                if sixteen_bit:
                    out[top : top + rows] = (np.asarray(band) >> 8).astype(np.uint8)[:, :, None]
                else:
                    out[top : top + rows] = np.asarray(band.convert("RGB"))
        except ImageLoadError:
            raise
        except Exception as exc:
            raise _decode_error(label, exc) from exc
    return out


def _holds_16_bit(img: Image.Image, label: str) -> bool:
    """True for 16-bit gray (modes ``I;16*``, or mode ``I`` with values above 255 and within 0..65535)."""
    if img.mode.startswith("I;16"):
        return True
    if img.mode != "I":
        return False
    low, high = img.getextrema()
    if low >= 0 and high <= 255:
        return False  # 8-bit data in a 32-bit container: convert('RGB') is exact
    if low >= 0 and high <= 65535:
        return True
    raise ImageLoadError(
        f"image {label} holds 32-bit integers from {low} to {high}, neither 8-bit nor 16-bit data; scale it to "
        "0..255 and pass mode 'L' or 'RGB'"
    )


def bgr_array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Convert a BGR (H, W, 3), BGRA (H, W, 4) or gray (H, W) / (H, W, 1) array to RGB uint8 (H, W, 3).

    uint8 is taken as is; uint16 keeps its high byte (``value >> 8``). A new array is always returned.
    """
    label = describe_source(array)
    array = _plain_array(array, label)
    if array.dtype.kind != "u" or array.dtype.itemsize not in (1, 2):
        raise ImageLoadError(
            f"image array {label} must have dtype uint8 (or uint16); convert with np.clip(a, 0, 255)"
            ".astype(np.uint8) (multiply a float image in [0, 1] by 255 first)"
        )
    if array.size == 0:
        raise ImageLoadError(f"image array {label} is empty; pass an array with at least one pixel")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageLoadError(f"image array {label} has an unsupported shape; {_ARRAY_FIX}")
    height, width = array.shape[:2]
    check_pixel_limit(width, height, label)
    rgb_view = array if array.shape[2] == 1 else array[:, :, 2::-1]
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        band = rgb_view[top : top + rows]
        out[top : top + rows] = band if band.dtype == np.uint8 else (band >> 8).astype(np.uint8)
    return out


def _plain_array(array: np.ndarray, label: str) -> np.ndarray:
    """A plain ndarray view of ``array`` (subclasses such as np.matrix or np.memmap); masked values are refused."""
    if isinstance(array, np.ma.MaskedArray):
        if np.ma.getmaskarray(array).any():
            raise ImageLoadError(
                f"image array {label} has masked values; fill them first, e.g. a.filled(0)"
            )
        return np.asarray(array.data)
    return np.asarray(array) if type(array) is not np.ndarray else array


# ---------------------------------------------------------------------------------------------------- URLs
def _download(url: str) -> bytes:
    """The body of ``url``, within the total deadline and the size limit (both documented above)."""
    deadline = url_deadline_seconds()
    return download_image(url, max_download_bytes(), deadline, min(URL_TIMEOUT_SECONDS, deadline))
