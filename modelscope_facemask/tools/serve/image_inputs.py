"""Images as a request carries them, to RGB arrays: uploaded bytes or base64 text (a ``data:`` URL too), checked
against the server's pixel limit on the file header before a pixel is decoded. A string is never a path; it is a
URL only when the server runs with ``--allow-urls``, then fetched with the package's URL loader (its deadline and
size caps). Errors are :class:`~.api_errors.ApiError` (422 ``invalid_image``, 413 ``image_too_large``)."""
from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np

from ...errors import ImageLoadError
from ...faces.image_limits import own_pixel_limit
from .api_errors import ApiError

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.I)
_URL = re.compile(r"^https?://", re.I)


def base64_bytes(text: str, what: str) -> bytes:
    """The bytes of base64 ``text`` (standard or URL-safe alphabet, padding optional, a ``data:`` URL prefix
    allowed); :class:`ApiError` 422 otherwise."""
    if not isinstance(text, str):
        raise ApiError(422, "invalid_image", f"{what} must be a base64 string, got {type(text).__name__}")
    body = _DATA_URL.sub("", text.strip(), count=1)
    body = "".join(body.split())
    body += "=" * (-len(body) % 4)
    try:
        data = base64.b64decode(body, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_image", f"{what} is not base64 image data: send the image file's bytes "
                                             "base64-encoded (never a path; a URL only if the server runs with "
                                             "--allow-urls)") from None
    if not data:
        raise ApiError(422, "invalid_image", f"{what} is empty: send the image file's bytes base64-encoded")
    return data


def is_url(text: str) -> bool:
    return bool(_URL.match(text.strip()))


def fetch_url(url: str, max_bytes: int) -> bytes:
    """The body of an http(s) image URL within the package's download deadline and size cap (and ``max_bytes``)."""
    from ...faces.images import URL_TIMEOUT_SECONDS, max_download_bytes, url_deadline_seconds
    from ...faces.url_images import download_image

    deadline = url_deadline_seconds()
    try:
        return download_image(url.strip(), min(max_download_bytes(), max_bytes), deadline,
                              min(URL_TIMEOUT_SECONDS, deadline))
    except ImageLoadError as exc:
        raise ApiError(422, "invalid_image", str(exc)) from None


def decode_image(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) of encoded image ``data`` (as the pipeline loads a file: EXIF-transposed), refused before
    decoding when its header says more than ``max_pixels`` pixels (a decompression bomb)."""
    from PIL import Image

    from ...faces.images import decode_image_bytes

    with own_pixel_limit():  # the server's limit decides, not Pillow's process-wide one
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception as exc:  # noqa: BLE001 - any undecodable data is the client's error
            raise ApiError(422, "invalid_image", f"{what} cannot be decoded ({type(exc).__name__}); send a JPEG, "
                                                 "PNG, BMP or WebP file") from None
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"{what} is {width}x{height} = {width * height:,} pixels, over the "
                                               f"server's limit of {max_pixels:,}; downscale it (the server's "
                                               "operator can raise --max-pixels)")
    try:
        return decode_image_bytes(data, label=what)
    except ImageLoadError as exc:
        raise ApiError(422, "invalid_image", str(exc)) from None
