"""``GET /v1/gallery``, ``POST /v1/gallery/identities`` (enrol), ``DELETE /v1/gallery/identities/{identity}``.

Without ``--gallery`` these answer 409 ``no_gallery``. Enrolment embeds each image's largest face; images without
a face or that cannot be decoded are listed in ``not_enrolled`` (all of them failing is 422)."""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from ...errors import EnrolmentSourceError
from ...support.printable import check_identity_name
from .api_errors import ApiError
from .auth import READ, WRITE
from .face_json import error_record
from .gallery_service import GalleryService, upload_source
from .request_body import RequestFields
from .service import ServeState, state_of

router = APIRouter()
MAX_IDENTITY_LENGTH = 200


def _gallery(state: ServeState) -> GalleryService:
    if state.gallery is None:
        raise ApiError(409, "no_gallery", "this server has no gallery: start it with --gallery G (a gallery folder, "
                                          "or a path where enrolment creates one)")
    return state.gallery


def _identity(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "missing_field", "field 'identity' is missing or empty: send the name to enrol under")
    if len(value) > MAX_IDENTITY_LENGTH:
        raise ApiError(422, "invalid_field", f"identity is {len(value)} characters long; the limit is "
                                             f"{MAX_IDENTITY_LENGTH}")
    try:
        check_identity_name(value, "the request")
    except EnrolmentSourceError as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    return value


@router.get("/v1/gallery")
async def gallery_info(request: Request) -> JSONResponse:
    state = state_of(request)
    state.require(request, READ)
    info = await _gallery(state).info()
    return JSONResponse({**info, "threshold": state.settings.decision_threshold,
                         "threshold_is_default": state.settings.threshold is None})


@router.post("/v1/gallery/identities")
async def enrol(request: Request) -> JSONResponse:
    state = state_of(request)
    state.require(request, WRITE)
    gallery = _gallery(state)
    state.require_ready()
    with state.batcher.arriving():
        fields = await RequestFields.read(request, state.settings)
        identity = _identity(fields.value("identity"))
        items = fields.images("images", many=True)
        decoded = await state.decoder.decode(items, "images", many=True)
    good = [i for i, item in enumerate(decoded) if not isinstance(item, ApiError)]
    outputs = dict(zip(good, await state.run([decoded[i] for i in good], [f"images[{i}]" for i in good],
                                             max_faces=1)))
    problems, rows, sources = [], [], []
    for i, item in enumerate(decoded):
        output = outputs.get(i)
        if isinstance(item, ApiError):
            problems.append({"index": i, "error": error_record(item.code, item.message)})
        elif "error" in output:
            problems.append({"index": i, "error": error_record("invalid_image", output["error"])})
        elif not len(output["scores"]):
            problems.append({"index": i, "error": error_record("no_face", f"no face found in images[{i}]")})
        else:
            rows.append(np.asarray(output["img_embedding"][0], np.float32))
            sources.append(upload_source(_bytes_of(items[i])))
    if not rows:
        first = problems[0]["error"]
        raise ApiError(422, first["code"], f"nothing enrolled under {identity!r}: {first['message']}")
    result = await gallery.enrol(identity, np.stack(rows), sources)
    return JSONResponse({"identity": identity, **result, "not_enrolled": problems})


def _bytes_of(item: Any) -> bytes:
    return bytes(item) if isinstance(item, (bytes, bytearray)) else str(item).encode()


@router.delete("/v1/gallery/identities/{identity}")
async def remove(request: Request, identity: str) -> JSONResponse:
    state = state_of(request)
    state.require(request, WRITE)
    removed = await _gallery(state).remove(identity)
    return JSONResponse({"identity": identity, "removed": removed})
