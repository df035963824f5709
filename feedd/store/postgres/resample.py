"""Larger UTC-aligned candles built from stored 1m candles inside PostgreSQL, exactly.

The same buckets, closed rule and source rule as ``feedd.store.resample`` (SQLite): a bucket
is closed only when every one of its minutes is stored and closed; its source is ``rest`` if
any minute came over REST, else ``archive`` if any came from an archive, else ``ws``. Values
are ``numeric``, so a sum is exact and high/low are one stored value; each leaves as the
nearest float (PostgreSQL's numeric -> float8 rounds correctly, like the SQLite side's one
int / int division).
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from feedd.intervals import INTERVAL_MS, MINUTE_MS, WEEK_MS, floor_open, next_open
from feedd.store import resample as rs
from feedd.store.postgres.connection import Connection
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST

_MIN_T, _MAX_T = -(2**63), 2**63 - 1
_WEEK_OFFSET_MS = 4 * 24 * 60 * MINUTE_MS
_SEEK_SQL = (
    "SELECT open_time FROM candles WHERE series = %s AND open_time >= %s AND open_time < %s"
    " ORDER BY open_time {order} LIMIT 1"
)


def bucket_sql(interval: str, column: str = "open_time") -> str:
    """The open time of the ``interval`` candle holding ``column``: bigint division, which
    truncates like SQLite's (times are never before 1970)."""
    if interval == "1M":
        month = f"date_trunc('month', to_timestamp(({column}) / 1000) AT TIME ZONE 'UTC')"
        return f"(extract(epoch FROM {month})::bigint * 1000)"
    if interval == "1w":
        off = _WEEK_OFFSET_MS
        return f"((({column}) - {off}) / {WEEK_MS} * {WEEK_MS} + {off})"
    size = INTERVAL_MS[interval]
    return f"(({column}) / {size} * {size})"


@cache
def _aggregate_sql(interval: str) -> str:
    """Parameters: series, lo, hi (twice each for the joins). One row per non-empty bucket
    of the 1m rows in [lo, hi), oldest first; open and close are the first and the last
    minute's, found by primary key once the bucket's ends are known."""
    return f"""
WITH g AS (
    SELECT {bucket_sql(interval)} AS bucket, count(*) AS n,
        bool_and(flags & {FLAG_CLOSED} <> 0) AS closed,
        bool_or(flags & {FLAG_REST} <> 0) AS rest,
        bool_or(flags & {FLAG_ARCHIVE} <> 0) AS archive,
        max(high) AS high, min(low) AS low, sum(volume) AS volume,
        sum(quote_volume) AS quote_volume, sum(trades) AS trades,
        min(open_time) AS first, max(open_time) AS last
    FROM candles WHERE series = %(series)s AND open_time >= %(lo)s AND open_time < %(hi)s
    GROUP BY 1
)
SELECT g.bucket, g.n, g.closed, g.rest, g.archive, o.open::float8, g.high::float8,
    g.low::float8, c.close::float8, g.volume::float8, g.quote_volume::float8,
    g.trades::bigint
FROM g
JOIN candles AS o ON o.series = %(series)s AND o.open_time = g.first
JOIN candles AS c ON c.series = %(series)s AND c.open_time = g.last
ORDER BY g.bucket
"""


def series_id(conn: Connection, exchange: str, symbol: str, interval: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM series WHERE exchange = %s AND symbol = %s AND interval = %s",
        (exchange, symbol, interval),
    ).fetchone()
    return None if row is None else int(row[0])


def query(
    conn: Connection,
    exchange: str,
    symbol: str,
    interval: str,
    start: int,
    end: int,
    *,
    newest: bool,
    limit: int,
) -> list[rs.Resampled]:
    """The ``limit`` newest (else oldest) non-empty ``interval`` buckets of the 1m rows with
    open times in [start, end), oldest first (as ``feedd.store.resample.query``). One
    repeatable-read transaction, so every window sees the same rows."""
    if limit <= 0 or start >= end:
        return []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        series = series_id(conn, exchange, symbol, rs.BASE_INTERVAL)
        if series is None:
            return []
        return _windows(conn, series, interval, start, end, newest, limit)


def _windows(
    conn: Connection,
    series: int,
    interval: str,
    start: int,
    end: int,
    newest: bool,
    limit: int,
) -> list[rs.Resampled]:
    """Aggregate window after window, each spanning as many buckets as are still wanted from
    the nearest stored minute on: with no holes the first window is the answer, and a hole
    costs one more seek and window, never a scan of the empty stretch."""
    found: list[rs.Resampled] = []
    seek = _SEEK_SQL.format(order="DESC" if newest else "ASC")
    lo, hi = start, end
    while len(found) < limit and lo < hi:
        wanted = limit - len(found)
        row = conn.execute(seek, (series, lo, hi)).fetchone()
        if row is None:
            break
        bucket = floor_open(interval, int(row[0]))
        if newest:
            window = (max(start, _step(interval, bucket, 1 - wanted)), hi)
            hi = window[0]
            found = _aggregate(conn, series, interval, *window) + found
        else:
            window = (bucket, min(end, _step(interval, bucket, wanted)))
            lo = window[1]
            found += _aggregate(conn, series, interval, *window)
    return found


def _aggregate(
    conn: Connection, series: int, interval: str, lo: int, hi: int
) -> list[rs.Resampled]:
    rows = conn.execute(_aggregate_sql(interval), {"series": series, "lo": lo, "hi": hi})
    out: list[rs.Resampled] = []
    for t, n, closed, rest, archive, o, h, low, c, v, qv, trades in rows:
        t = int(t)
        complete = n == rs.expected_minutes(t, next_open(interval, t))
        source = "rest" if rest else "archive" if archive else "ws"
        out.append((t, o, h, low, c, v, qv, trades, complete and closed, source))
    return out


def _step(interval: str, bucket: int, count: int) -> int:
    """The open time ``count`` buckets after (before, if negative) ``bucket``, clamped to the
    bigint range."""
    if interval == "1M":
        d = dt.datetime.fromtimestamp(bucket / 1000, tz=dt.UTC)
        months = d.year * 12 + d.month - 1 + count
        year, month = divmod(months, 12)
        if year < dt.MINYEAR:
            return _MIN_T
        if year > dt.MAXYEAR:
            return _MAX_T
        return int(dt.datetime(year, month + 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    return max(_MIN_T, min(_MAX_T, bucket + count * INTERVAL_MS[interval]))
