"""A request's fields, whether it came as ``multipart/form-data`` (image files, text fields) or as JSON (images as
base64 strings), and its images decoded off the event loop. Anything else is 415; JSON that does not parse, 400."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.requests import Request

from .api_errors import ApiError
from .image_inputs import base64_bytes, decode_image, fetch_url, is_url
from .settings import ServeSettings

_MAX_TEXT_FIELDS = 64


class RequestFields:
    """The fields of one request: ``files`` (multipart uploads, bytes) and ``values`` (text fields or JSON)."""

    def __init__(self, files: dict[str, list[bytes]], values: dict[str, Any], is_json: bool) -> None:
        self.files, self.values, self.is_json = files, values, is_json

    @classmethod
    async def read(cls, request: Request, settings: ServeSettings) -> "RequestFields":
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=settings.max_images, max_fields=_MAX_TEXT_FIELDS,
                                      max_part_size=settings.max_body_bytes)
            files: dict[str, list[bytes]] = {}
            values: dict[str, Any] = {}
            for name, value in form.multi_items():
                if isinstance(value, str):
                    values[name] = value
                else:
                    files.setdefault(name, []).append(await value.read())
            await form.close()
            return cls(files, values, False)
        if kind == "application/json" or kind.endswith("+json"):
            return cls({}, await read_json(request), True)
        raise ApiError(415, "unsupported_media_type", f"Content-Type {kind or '(none)'!r} is not accepted here: send "
                                                      "multipart/form-data (image files) or application/json (base64 "
                                                      "images)")

    def images(self, name: str, *, many: bool) -> list[Any]:
        """The images sent as field ``name``: uploaded bytes, or base64 / URL strings (JSON or text fields)."""
        found: list[Any] = list(self.files.get(name, []))
        value = self.values.get(name)
        if value is not None:
            found += value if isinstance(value, list) else [value]
        if not found:
            raise ApiError(422, "missing_field", f"no image in field {name!r}: send "
                                                 f"{'one or more files' if many else 'a file'} as {name!r} "
                                                 f"(multipart) or {{{name!r}: {'[base64, ...]' if many else 'base64'}}}"
                                                 " (JSON)")
        if not many and len(found) > 1:
            raise ApiError(422, "too_many_images", f"field {name!r} takes one image, got {len(found)}")
        return found

    def value(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object of the body; 400 ``malformed_json`` otherwise."""
    body = await request.body()
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", f"the body is JSON {type(data).__name__}, not an object; send a JSON "
                                              "object")
    return data


class ImageDecoder:
    """Decodes a request's images on a small thread pool (never on the event loop)."""

    def __init__(self, settings: ServeSettings, threads: int = 2) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="facemask-decode")

    def _one(self, item: Any, what: str) -> Any:
        """An RGB array, or the :class:`ApiError` why not (returned, so that one bad image fails alone)."""
        try:
            if isinstance(item, (bytes, bytearray)):
                data = bytes(item)
            elif isinstance(item, str) and is_url(item):
                if not self.settings.allow_urls:
                    raise ApiError(422, "urls_not_allowed", f"{what} is a URL; this server accepts only the image "
                                                            "bytes (its operator can allow URLs with --allow-urls)")
                data = fetch_url(item, self.settings.max_body_bytes)
            else:
                data = base64_bytes(item, what)
            return decode_image(data, what, self.settings.max_pixels)
        except ApiError as exc:
            if isinstance(item, str) and exc.code == "invalid_image" and "never a path" not in exc.message:
                exc.message += " (a string is read as base64 image bytes, never as a path)"
            return exc

    async def decode(self, items: list[Any], what: str, *, many: bool = False) -> list[Any]:
        """Each item decoded (or its ApiError), in order; ``what`` names them (``images[0]`` when ``many``)."""
        if len(items) > self.settings.max_images:
            raise ApiError(413, "too_many_images", f"{len(items)} images in one request, over the server's limit of "
                                                   f"{self.settings.max_images}; split the request")
        loop = asyncio.get_running_loop()
        names = [f"{what}[{i}]" if many else what for i in range(len(items))]
        return list(await asyncio.gather(*(loop.run_in_executor(self._pool, self._one, item, name)
                                           for item, name in zip(items, names))))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
