"""Request bodies of state-changing routes: JSON objects only, fields checked by name."""

from __future__ import annotations

from typing import Any

import orjson
from quart import request

from feedd.web.errors import ApiError


async def json_object() -> dict[str, Any]:
    """The request's JSON object body (400 for bad JSON). The content type was checked
    for every state-changing request by ``feedd.web.security``."""
    raw = await request.get_data(cache=False)
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    return data


def string_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name} must be a non-empty string", name)
    return value


def string_list(data: dict[str, Any], name: str, max_items: int = 5000) -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_items:
        raise ApiError(400, f"{name} must be a list of at most {max_items} strings", name)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(400, f"{name}[{index}] must be a string", f"{name}[{index}]")
    return value


def optional_bool(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", name)
    return value
