"""Validation of path and query parameters shared by the routes, and the download name that
echoes them back."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from feedd import exchanges
from feedd.intervals import is_interval
from feedd.symbols import RULE, is_symbol
from feedd.web.errors import ApiError

MAX_LIMIT = 5000
DEFAULT_LIMIT = 1000
MAX_TIME_MS = 10**14


def exchange_name(value: str) -> str:
    if value not in exchanges.REGISTRY:
        raise ApiError(404, f"unknown exchange {value!r}", "exchange")
    return value


def symbol(value: str) -> str:
    if not is_symbol(value):
        raise ApiError(400, f"malformed symbol {value[:40]!r} ({RULE})", "symbol")
    return value


def interval(value: str) -> str:
    if not is_interval(value):
        raise ApiError(400, f"unknown interval {value[:10]!r}", "interval")
    return value


def bounded_int(args: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise ApiError(400, f"{name} must be a whole number", name)
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", name)
    return value


def attachment(filename: str) -> str:
    """A Content-Disposition for ``filename`` (RFC 6266): header values are ASCII, so a name
    with e.g. a Han symbol goes in ``filename*`` as UTF-8, with an ASCII stand-in before it."""
    fallback = "".join(ch if ch.isascii() and ch not in '"\\' else "_" for ch in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def boolean(args: Mapping[str, str], name: str) -> bool:
    """A query flag: absent or ``false``/``0`` is False, present empty or ``true``/``1`` True."""
    raw = args.get(name)
    if raw is None:
        return False
    value = raw.lower()
    if value in ("", "1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ApiError(400, f"{name} must be true or false", name)
