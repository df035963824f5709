"""The dashboard's static files from ``web/``: ``/`` is the console, others by their path."""

from __future__ import annotations

import os
from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound

from feedd.web.errors import ApiError

static = Blueprint("static", __name__)

#: the repository's web/ folder; FEEDD_WEB_DIR points elsewhere (packaged installs)
WEB_DIR = Path(os.environ.get("FEEDD_WEB_DIR") or Path(__file__).resolve().parents[2] / "web")


@static.get("/")
async def index() -> Response:
    return await asset("index.html")


@static.get("/<path:name>")
async def asset(name: str) -> Response:
    # send_from_directory refuses paths that leave the folder (.., absolute, NUL).
    if not (WEB_DIR / "index.html").is_file():
        raise ApiError(404, f"the dashboard files are not installed ({WEB_DIR})")
    try:
        response = await send_from_directory(WEB_DIR, name)
    except (NotFound, OSError):
        raise ApiError(404, "not found") from None
    response.headers["Cache-Control"] = "no-cache"
    return response
