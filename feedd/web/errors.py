"""JSON error responses: every client error names the field at fault; never a traceback."""

from __future__ import annotations

import logging

import orjson
from quart import Response

log = logging.getLogger("feedd.web")


class ApiError(Exception):
    """Raised by handlers to answer with ``status`` and a JSON error body."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def json_response(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json")


def error_response(status: int, message: str, field: str | None = None) -> Response:
    body: dict[str, object] = {"error": message}
    if field is not None:
        body["field"] = field
    return json_response(body, status)
