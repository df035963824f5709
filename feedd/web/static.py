"""The dashboard's static files (``web/``, packaged as ``feedd.webroot``): ``/`` is the console.

The catch-all route answers every GET no other route takes, including a GET of a route
that serves other methods only (``/toggleExchange``): that is a 405 naming them, not a
missing file."""

from __future__ import annotations

import os
from pathlib import Path

from quart import Blueprint, Response, current_app, send_from_directory
from werkzeug.exceptions import MethodNotAllowed, NotFound

from feedd.web.errors import ApiError

static = Blueprint("static", __name__)


def find_web_dir() -> Path:
    """$FEEDD_WEB_DIR if set (to serve a modified dashboard), else the copy an installed wheel
    carries (web/ is packaged as feedd.webroot), else the checkout's web/ (editable install)."""
    override = os.environ.get("FEEDD_WEB_DIR")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]
    # An editable install maps feedd.webroot onto web/ too, but a data-only package is not
    # importable through setuptools' editable finder: look for the files, not the module.
    installed, checkout = package / "webroot", package.parent / "web"
    if installed.is_dir() or not checkout.is_dir():
        return installed
    return checkout


#: where the dashboard's files are served from
WEB_DIR = find_web_dir()


@static.get("/")
async def index() -> Response:
    return await asset("index.html")


@static.get("/<path:name>")
async def asset(name: str) -> Response:
    allowed = _methods_elsewhere("/" + name)
    if allowed:
        raise MethodNotAllowed(valid_methods=sorted(allowed))
    # send_from_directory refuses paths that leave the folder (.., absolute, NUL).
    if not (WEB_DIR / "index.html").is_file():
        raise ApiError(404, f"the dashboard files are not installed ({WEB_DIR})")
    try:
        response = await send_from_directory(WEB_DIR, name)
    except (NotFound, OSError):
        raise ApiError(404, "not found") from None
    response.headers["Cache-Control"] = "no-cache"
    return response


def _methods_elsewhere(path: str) -> frozenset[str]:
    """Methods that a route other than the static files serves at ``path`` (a dict look-up:
    the catch-all answers floods of junk paths too)."""
    table: dict[str, frozenset[str]] | None = current_app.extensions.get("feedd.static_other")
    if table is None:
        table = {}
        for rule in current_app.url_map.iter_rules():
            if not rule.endpoint.startswith("static.") and not rule.arguments:
                table[rule.rule] = table.get(rule.rule, frozenset()) | (rule.methods or set())
        current_app.extensions["feedd.static_other"] = table
    return table.get(path, frozenset())
