"""Request bodies of state-changing routes: JSON objects only, fields checked by name.

Every body is first held to its route's documented schema (``feedd.web.openapi``) for one
thing handlers cannot tell from a missing field: ``null``. A field the schema types as a
boolean, an array or a string may be left out, never null (``"enabled": null`` used to
read as "not given" and flip the exchange)."""

from __future__ import annotations

from typing import Any

import orjson
from quart import request

from feedd.web.errors import ApiError
from feedd.web.openapi import Schema, body_schema, resolve


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
    schema = body_schema(request.path)
    if schema is not None:
        check_nulls(data, schema)
    return data


def check_nulls(value: Any, schema: Schema, field: str = "") -> None:
    """400 naming the first null found where ``schema`` does not allow one."""
    schema = resolve(schema)
    for part in schema.get("allOf", ()):
        check_nulls(value, part, field)
    if value is None:
        if not _allows_null(schema):
            kind = schema.get("type", "value")
            raise ApiError(
                400, f"{field or 'the body'} must be a {kind}, not null", field or "body"
            )
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                check_nulls(item, sub, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            check_nulls(item, schema["items"], f"{field}[{index}]")


def _allows_null(schema: Schema) -> bool:
    schema = resolve(schema)
    if "allOf" in schema:
        return all(_allows_null(part) for part in schema["allOf"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return any(_allows_null(part) for part in schema[key])
    if "type" in schema:
        types = schema["type"]
        return "null" in types if isinstance(types, list) else types == "null"
    if "enum" in schema:
        return None in schema["enum"]
    if "const" in schema:
        return schema["const"] is None
    return True


def string_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name} must be a non-empty string", name)
    return value


def string_list(data: dict[str, Any], name: str, max_items: int = 5000) -> list[str] | None:
    """The list of strings ``name``; None when left out (null is refused)."""
    if name not in data:
        return None
    value = data[name]
    if not isinstance(value, list) or len(value) > max_items:
        raise ApiError(400, f"{name} must be a list of at most {max_items} strings", name)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(400, f"{name}[{index}] must be a string", f"{name}[{index}]")
    return value


def optional_bool(data: dict[str, Any], name: str) -> bool | None:
    """The boolean ``name``; None when left out (null is refused)."""
    if name not in data:
        return None
    value = data[name]
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", name)
    return value
