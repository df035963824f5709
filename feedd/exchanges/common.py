"""Logic shared by the exchange modules: REST page windows, bounded batching, error translation.

See ../shared/PROTOCOLS.md sections 1.6, 2.6 and 3.6 (paging) and 2.2 / 3.2 (request limits).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import ParamSpec, TypeVar

from feedd.candle import Candle, Source
from feedd.errors import ParseError
from feedd.exchanges import fields as f
from feedd.exchanges.contract import Stream
from feedd.intervals import INTERVAL_MS

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: what malformed input can provoke inside a parser despite the strict field readers
_PARSE_FAILURES = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError)


def parse_guard(fn: Callable[P, R]) -> Callable[P, R]:
    """Make ``fn`` raise only feedd errors on bad input.

    The engine counts ParseError and keeps reading; any other exception would end the
    session, so one malformed frame must never escape as KeyError or IndexError.
    """

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _PARSE_FAILURES as exc:
            raise ParseError(f"{fn.__name__}: {type(exc).__name__}: {exc}") from None

    return guarded


_OHLCV = ("open", "high", "low", "close", "volume", "quote_volume")


def ohlcv_candle(
    exchange: str,
    stream: Stream,
    open_time: int,
    values: Sequence[object],
    closed: bool,
    source: Source,
) -> Candle:
    """A candle without a trade count from open, high, low, close, base and quote volume."""
    if len(values) != len(_OHLCV):
        raise ParseError(f"expected {len(_OHLCV)} price/volume values, got {len(values)}")
    o, h, low, c, v, q = values
    if not (
        type(o) is str
        and type(h) is str
        and type(low) is str
        and type(c) is str
        and type(v) is str
        and type(q) is str
        and f.six_decimals(o, h, low, c, v, q)
    ):
        o, h, low, c, v, q = (f.decimal(x, name) for name, x in zip(_OHLCV, values, strict=True))
    return Candle(exchange, stream.symbol, stream.interval, open_time, o, h, low, c, v, q, None,
                  closed, source)  # fmt: skip


def page_window(interval: str, start_ms: int, end_ms: int, page_limit: int) -> tuple[int, int]:
    """The last open time and the candle count of the page that starts at ``start_ms``.

    The window spans ``page_limit`` interval lengths; a month counts as 28 days, a lower
    bound, so a window never holds more candles than the page carries.
    """
    step = INTERVAL_MS[interval]
    window_end = min(end_ms, start_ms + step * page_limit - 1)
    return window_end, min(page_limit, (window_end - start_ms) // step + 1)


def page_windows(
    interval: str, start_ms: int, end_ms: int, page_limit: int
) -> Iterator[tuple[int, int, int]]:
    """(start, end, count) of consecutive pages covering open times ``start_ms`` .. ``end_ms``."""
    window_start = start_ms
    while window_start <= end_ms:
        window_end, count = page_window(interval, window_start, end_ms, page_limit)
        yield window_start, window_end, count
        window_start = window_end + 1


def batched(
    items: Sequence[T], max_count: int, max_size: int, size: Callable[[T], int]
) -> Iterator[tuple[T, ...]]:
    """Consecutive batches of at most ``max_count`` items whose sizes sum to ``max_size``.

    An item larger than ``max_size`` on its own still goes out alone: the venue will reject
    it and say so, which beats silently never subscribing it.
    """
    batch: list[T] = []
    total = 0
    for item in items:
        cost = size(item)
        if batch and (len(batch) >= max_count or total + cost > max_size):
            yield tuple(batch)
            batch, total = [], 0
        batch.append(item)
        total += cost
    if batch:
        yield tuple(batch)
