"""The web console's static files (``GET /`` is ``index.html``; ``/console/NAME`` the others), served from a
folder of the package: :func:`console_folder` (a function, so that it can be swapped)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse

from .api_errors import ApiError

router = APIRouter()
#: the files the console may serve, with their content types
CONSOLE_FILES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
                 "console.css": "text/css; charset=utf-8"}


def console_folder() -> Path:
    """The folder holding the console's files."""
    return Path(__file__).with_name("console")


def _file(name: str) -> FileResponse:
    path = console_folder() / name
    if name not in CONSOLE_FILES or not path.is_file():
        raise ApiError(404, "not_found", f"no console file {name!r}")
    return FileResponse(path, media_type=CONSOLE_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> FileResponse:
    return _file("index.html")


@router.get("/console/{name}")
async def console_file(name: str) -> FileResponse:
    return _file(name)
