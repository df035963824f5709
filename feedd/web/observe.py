"""Observation routes: /status, /logs and /metrics."""

from __future__ import annotations

from quart import Blueprint, Response, request

from feedd.monitor.logring import LEVELS
from feedd.web import metrics, params
from feedd.web.errors import ApiError, json_response
from feedd.web.live import log_dict
from feedd.web.state import current_state as state
from feedd.web.status import status_document

observe = Blueprint("observe", __name__)

MAX_LOG_LINES = 2000


@observe.get("/status")
async def status() -> Response:
    return json_response(status_document(state()))


@observe.get("/logs")
async def logs() -> Response:
    since = params.bounded_int(request.args, "since", 0, 2**62) or 0
    level = request.args.get("level", "debug")
    if level not in LEVELS:
        raise ApiError(400, f"level must be one of {', '.join(LEVELS)}", "level")
    limit = params.bounded_int(request.args, "limit", 1, MAX_LOG_LINES) or MAX_LOG_LINES
    ring = state().logs
    lines = ring.since(since, level, limit)
    # `next` covers lines filtered out by level too, so polling never sees them later.
    return json_response(
        {"lines": [log_dict(line) for line in lines], "next": max(since, ring.last_seq)}
    )


@observe.get("/metrics")
async def prometheus() -> Response:
    return Response(metrics.render(state()), content_type=metrics.CONTENT_TYPE)
