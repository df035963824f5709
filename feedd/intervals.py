"""Canonical candle intervals (``1m`` … ``1M``): their lengths and UTC alignment of open times.

Weeks open on Monday 00:00 UTC and months on the 1st, 00:00 UTC; every other interval is a
fixed number of milliseconds aligned to the epoch.
"""

from __future__ import annotations

import datetime as dt

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; Monday-aligned weeks start 4 days after the epoch.
_WEEK_OFFSET_MS = 4 * DAY_MS

#: canonical name -> length in ms. A month is given as 28 days, a lower bound, so that a time
#: span divided by it never undercounts the candles inside it.
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
    "1M": 28 * DAY_MS,
}

CANONICAL_INTERVALS: tuple[str, ...] = tuple(INTERVAL_MS)


def is_interval(name: str) -> bool:
    return name in INTERVAL_MS


def floor_open(interval: str, t_ms: int) -> int:
    """The open time of the candle of ``interval`` that contains ``t_ms``."""
    if interval == "1M":
        d = dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC)
        return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC).timestamp() * 1000)
    if interval == "1w":
        return (t_ms - _WEEK_OFFSET_MS) // WEEK_MS * WEEK_MS + _WEEK_OFFSET_MS
    size = INTERVAL_MS[interval]
    return t_ms // size * size


def next_open(interval: str, open_ms: int) -> int:
    """The open time of the candle after the one opening at ``open_ms``."""
    if interval == "1M":
        d = dt.datetime.fromtimestamp(open_ms / 1000, tz=dt.UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)
    return open_ms + INTERVAL_MS[interval]


def close_time(interval: str, open_ms: int) -> int:
    """The first millisecond after the candle: it is closed once the exchange clock reaches it."""
    return next_open(interval, open_ms)
