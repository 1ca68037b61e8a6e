"""ModelScope's own server routes, as ``modelscope server`` answers them for ``Tasks.face_recognition``:
``POST /call`` (``{"input": {"image": BASE64}, "parameters": {...}}`` or ``{"input": BASE64}``; the answer is
ModelScope's ``pipeline_output_to_service_base64_output`` of the pipeline's output), ``GET /describe`` (the task's
schema and sample) and ``GET /health``. Unlike ModelScope's converter, a string is always base64 image bytes: never
a path the server opens, and a URL only with ``--allow-urls``."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from ...errors import ConfigurationError
from ...support.json_output import finite_or_none
from .api_errors import ApiError
from .auth import READ
from .request_body import read_json
from .service import state_of

router = APIRouter()
TASK = "face-recognition"


def _image_field(body: dict[str, Any]) -> Any:
    if "input" not in body:
        raise ApiError(422, "missing_field", "the body has no 'input': send {\"input\": {\"image\": BASE64}, "
                                             "\"parameters\": {}}")
    value = body["input"]
    if isinstance(value, dict):
        if set(value) != {"image"}:
            raise ApiError(422, "invalid_field", f"'input' holds {sorted(value)}; face recognition takes "
                                                 "{\"image\": BASE64}")
        value = value["image"]
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", "'input' must be a base64 image string or {\"image\": BASE64}")
    return value


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    from ...modelscope_adapters.keywords import check_call_options

    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(422, "invalid_field", "'parameters' must be an object of the pipeline's per-call options "
                                             "(use_det, max_faces, batch_size)")
    try:
        return check_call_options(parameters)
    except ConfigurationError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None


@router.post("/call")
async def call(request: Request) -> JSONResponse:
    from modelscope.utils.input_output import pipeline_output_to_service_base64_output

    state = state_of(request)
    state.require(request, READ)
    state.require_ready()
    with state.batcher.arriving():
        body = await read_json(request)
        image, parameters = _image_field(body), _parameters(body)
        (decoded,) = await state.decoder.decode([image], "input.image")
    if isinstance(decoded, ApiError):
        raise decoded
    (output,) = await state.run([decoded], ["input.image"], **parameters)
    if "error" in output:
        raise ApiError(422, "invalid_image", f"input.image: {output['error']}")
    # strict JSON: the NaN scores and landmarks of use_det=False become null (ModelScope's would be invalid JSON)
    return JSONResponse(finite_or_none(pipeline_output_to_service_base64_output(TASK, output)))


@router.get("/describe")
async def describe(request: Request) -> JSONResponse:
    from modelscope.utils.input_output import get_task_input_examples, get_task_schemas

    state_of(request).require(request, READ)
    return JSONResponse({"schema": {"task_name": TASK, "schema": get_task_schemas(TASK)},
                         "sample": get_task_input_examples(TASK)})


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"Code": 200, "Success": True, "RequestId": "", "Message": "success", "Data": {}})
