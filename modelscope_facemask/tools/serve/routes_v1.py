"""``POST /v1/embed``, ``POST /v1/verify``, ``POST /v1/identify``: faces, embeddings, 1:1 and 1:N answers."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from .api_errors import ApiError
from .auth import READ
from .face_json import candidate_records, error_record, face_record, faces_of
from .request_body import RequestFields
from .service import ServeState, state_of

router = APIRouter()


async def _read_images(state: ServeState, request: Request, name: str, *, many: bool) -> tuple[RequestFields, list]:
    """The request's fields and its images in field ``name`` decoded (each an array or its ApiError)."""
    state.require(request, READ)
    state.require_ready()
    with state.batcher.arriving():
        fields = await RequestFields.read(request, state.settings)
        decoded = await state.decoder.decode(fields.images(name, many=many), name, many=many)
    return fields, decoded


def _single(decoded: list) -> np.ndarray:
    if isinstance(decoded[0], ApiError):
        raise decoded[0]
    return decoded[0]


def _raise_for(output: dict[str, Any], name: str) -> None:
    if "error" in output:
        raise ApiError(422, "invalid_image", f"{name}: {output['error']}")


@router.post("/v1/embed")
async def embed(request: Request) -> JSONResponse:
    """Every face of each image, with its embedding; a bad image gets its own ``error``."""
    state = state_of(request)
    _, decoded = await _read_images(state, request, "images", many=True)
    good = [i for i, item in enumerate(decoded) if not isinstance(item, ApiError)]
    outputs = await state.run([decoded[i] for i in good], [f"images[{i}]" for i in good], max_faces=None)
    by_slot = dict(zip(good, outputs))
    records = []
    for i, item in enumerate(decoded):
        if isinstance(item, ApiError):
            records.append({"index": i, "faces": [], "error": error_record(item.code, item.message)})
        elif "error" in by_slot[i]:
            records.append({"index": i, "faces": [], "error": error_record("invalid_image", by_slot[i]["error"])})
        else:
            records.append({"index": i, "faces": faces_of(by_slot[i]), "error": None})
    return JSONResponse({"images": records})


def _threshold(fields: RequestFields, default: float) -> float:
    value = fields.value("threshold")
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not -1.0 <= number <= 1.0:
        raise ApiError(422, "invalid_field", f"threshold must be a cosine similarity in [-1, 1], got {value!r}")
    return number


def _top_k(fields: RequestFields, default: int) -> int:
    value = fields.value("top_k")
    if value is None or value == "":
        return default
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 100:
        raise ApiError(422, "invalid_field", f"top_k must be an integer from 1 to 100, got {value!r}")
    return int(text)


@router.post("/v1/verify")
async def verify(request: Request) -> JSONResponse:
    """Cosine similarity of the largest faces of ``image_a`` and ``image_b``, and the same/different decision."""
    state = state_of(request)
    state.require(request, READ)
    state.require_ready()
    with state.batcher.arriving():
        fields = await RequestFields.read(request, state.settings)
        a = await state.decoder.decode(fields.images("image_a", many=False), "image_a")
        b = await state.decoder.decode(fields.images("image_b", many=False), "image_b")
    threshold = _threshold(fields, state.settings.decision_threshold)
    out_a, out_b = await state.run([_single(a), _single(b)], ["image_a", "image_b"], max_faces=1)
    for output, name in ((out_a, "image_a"), (out_b, "image_b")):
        _raise_for(output, name)
        if not len(output["scores"]):
            raise ApiError(422, "no_face", f"no face found in {name}; send a photo with a visible face")
    similarity = float(np.dot(out_a["img_embedding"][0].astype(np.float64), out_b["img_embedding"][0]))
    return JSONResponse({"similarity": similarity, "threshold": threshold, "same": similarity >= threshold,
                         "faces": {"a": face_record(out_a, 0, embedding=False, landmarks=False),
                                   "b": face_record(out_b, 0, embedding=False, landmarks=False)}})


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ApiError(422, "invalid_field", f"annotate must be true or false, got {value!r}")


@router.post("/v1/identify")
async def identify(request: Request) -> JSONResponse:
    """Every face of ``image`` searched in the gallery: its top-k identities, ``unknown`` below the threshold."""
    state = state_of(request)
    gallery = state.gallery
    if gallery is None:
        state.require(request, READ)
        raise ApiError(409, "no_gallery", "this server has no gallery: start it with --gallery G")
    fields, decoded = await _read_images(state, request, "image", many=False)
    image = _single(decoded)
    top_k, threshold = _top_k(fields, state.settings.top_k), _threshold(fields, state.settings.decision_threshold)
    annotate = _flag(fields.value("annotate"))
    (output,) = await state.run([image], ["image"], max_faces=None)
    _raise_for(output, "image")
    answers = await gallery.identify(output["img_embedding"], top_k=top_k, threshold=threshold)
    faces = []
    for row, answer in enumerate(answers):
        record = face_record(output, row, embedding=False)
        best = answer.candidates[0].score if answer.candidates else None
        record.update(identity=answer.identity if answer.identity is not None else "unknown",
                      similarity=best, candidates=candidate_records(answer.candidates))
        faces.append(record)
    document: dict[str, Any] = {"faces": faces, "threshold": threshold, "top_k": top_k}
    if annotate:
        from .annotated import annotated_data_url

        document["annotated_image"] = await asyncio.to_thread(annotated_data_url, image, faces)
    return JSONResponse(document)
