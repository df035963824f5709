"""REST building blocks shared by the venues: the response value, JSON bodies, query reading,
and the selection of candle open times for a paging window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

from feedd.intervals import floor_open, next_open


@attrs.frozen(slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


def json_response(
    value: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status, orjson.dumps(value), headers)


def text_response(text: str, status: int) -> Response:
    return Response(status, text.encode(), (), "text/plain")


class BadParam(Exception):
    """A query parameter is missing or malformed; each venue renders its own error body."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def int_param(query: dict[str, str], name: str, default: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParam(name, "not an integer") from None


def first_open_at_or_after(interval: str, t_ms: int) -> int:
    opened = floor_open(interval, t_ms)
    return opened if opened >= t_ms else next_open(interval, opened)


def prev_open(interval: str, open_ms: int) -> int:
    return floor_open(interval, open_ms - 1)


def _every(_open_ms: int) -> bool:
    return True


def opens_forward(
    interval: str, first: int, last: int, limit: int, exists: Callable[[int], bool] = _every
) -> list[int]:
    """Up to ``limit`` open times from ``first`` (aligned) to ``last`` inclusive, ascending;
    candles that do not ``exist`` (a hole) are skipped and not counted, as venues page."""
    out: list[int] = []
    t = first
    while t <= last and len(out) < limit:
        if exists(t):
            out.append(t)
        t = next_open(interval, t)
    return out


def opens_backward(
    interval: str, first: int, last: int, limit: int, exists: Callable[[int], bool] = _every
) -> list[int]:
    """Up to ``limit`` open times from ``last`` (aligned) down to ``first``, newest first."""
    out: list[int] = []
    t = last
    while t >= first and len(out) < limit:
        if exists(t):
            out.append(t)
        t = prev_open(interval, t)
    return out


def limit_param(query: dict[str, str], name: str, default: int, maximum: int) -> int:
    value = int_param(query, name, default)
    assert value is not None
    if not 1 <= value <= maximum:
        raise BadParam(name, f"must be between 1 and {maximum}")
    return value
