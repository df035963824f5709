"""Larger UTC-aligned candles built from stored 1m candles inside PostgreSQL, exactly.

The same buckets, closed rule and source rule as ``feedd.store.resample`` (SQLite): a bucket
is closed only when every one of its minutes is stored and closed; its source is ``rest`` if
any minute came over REST, else ``archive`` if any came from an archive, else ``ws``. Values
are ``numeric``, so a sum is exact and high/low are one stored value; each leaves as the
nearest float (PostgreSQL's numeric -> float8 rounds correctly, like the SQLite side's one
int / int division). Buckets of whole hours whose every hour is closed come from the writer's
hourly rollup (feedd/store/postgres/rollup.py): the same numbers from a sixtieth of the rows.
"""

from __future__ import annotations

from feedd.intervals import INTERVAL_MS, floor_open, next_open
from feedd.store import resample as rs
from feedd.store.postgres import rollup
from feedd.store.postgres.connection import Connection
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST

#: One row per listed bucket holding a stored minute, oldest first. Each bucket is one primary
#: key range (no sort, no hash of the whole series); open and close are one key lookup each,
#: at the range's first and last open time. ``{buckets}``: the bucket list, ``b(t, e)``.
_AGGREGATE_SQL = """
SELECT b.t, b.e, a.n, a.all_flags, a.any_flags,
    (SELECT open FROM candles WHERE series = %(series)s AND open_time = a.first)::float8,
    a.high::float8, a.low::float8,
    (SELECT close FROM candles WHERE series = %(series)s AND open_time = a.last)::float8,
    a.volume::float8, a.quote_volume::float8, a.trades::bigint
FROM {buckets}
CROSS JOIN LATERAL (
    SELECT count(*) AS n, bit_and(flags) AS all_flags, bit_or(flags) AS any_flags,
        min(open_time) AS first, max(open_time) AS last, max(high) AS high, min(low) AS low,
        sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades
    FROM candles WHERE series = %(series)s AND open_time >= b.t AND open_time < b.e
) AS a
WHERE a.n > 0
ORDER BY b.t
"""
#: buckets of one size, made by the server: binding them as arrays cost the client more CPU
#: (psycopg dumps a list element by element) than the server spent aggregating them
_EVERY = _AGGREGATE_SQL.format(
    buckets="(SELECT t, t + %(step)s AS e FROM generate_series(%(first)s::bigint,"
    " %(last)s::bigint, %(step)s::bigint) AS g(t)) AS b"
)
#: months, whose lengths differ: listed (a few per query)
_LISTED = _AGGREGATE_SQL.format(
    buckets="unnest(%(starts)s::bigint[], %(ends)s::bigint[]) AS b(t, e)"
)
#: the 1m series' id, and whether the rollup exists (a standby of an older schema has none)
_SERIES_SQL = (
    "SELECT id, to_regclass('candle_hours') IS NOT NULL FROM series"
    " WHERE exchange = %s AND symbol = %s AND interval = %s"
)
#: the oldest and newest stored minute of a range: two index seeks, spelled out, since with
#: no statistics yet (a table just filled) the planner aggregates every row in range instead
_EDGE = (
    "(SELECT open_time FROM candles WHERE series = %(series)s AND open_time >= %(lo)s"
    " AND open_time < %(hi)s ORDER BY open_time {} LIMIT 1)"
)
_BOUNDS_SQL = f"SELECT {_EDGE.format('ASC')}, {_EDGE.format('DESC')}"


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
        row = conn.execute(_SERIES_SQL, (exchange, symbol, rs.BASE_INTERVAL)).fetchone()
        if row is None:
            return []
        series, hours = int(row[0]), bool(row[1]) and interval in rollup.HOURLY
        return _windows(conn, series, interval, start, end, newest, limit, hours)


def _windows(
    conn: Connection,
    series: int,
    interval: str,
    start: int,
    end: int,
    newest: bool,
    limit: int,
    hours: bool,
) -> list[rs.Resampled]:
    """Aggregate window after window, each listing as many buckets as are still wanted from
    the nearest stored minute on: with no holes the first window is the answer, and a hole
    costs one more window, never a walk through the empty stretch."""
    found: list[rs.Resampled] = []
    lo, hi = start, end
    while len(found) < limit and lo < hi:
        edges = {"series": series, "lo": lo, "hi": hi}
        first, last = conn.execute(_BOUNDS_SQL, edges).fetchone() or (None, None)
        if first is None or last is None:
            break
        bottom, top = floor_open(interval, int(first)), floor_open(interval, int(last))
        buckets = _buckets(interval, bottom, top, limit - len(found), newest)
        if newest:
            hi = buckets[0]
            found = _aggregate(conn, series, interval, buckets, hours) + found
        else:
            lo = next_open(interval, buckets[-1])
            found += _aggregate(conn, series, interval, buckets, hours)
    return found


def _buckets(interval: str, bottom: int, top: int, count: int, newest: bool) -> list[int]:
    """Up to ``count`` consecutive bucket open times between ``bottom`` and ``top``
    (inclusive), ascending: the newest ones if ``newest``, else the oldest."""
    if interval != "1M":
        size = INTERVAL_MS[interval]
        if newest:
            return list(range(max(bottom, top - (count - 1) * size), top + 1, size))
        return list(range(bottom, min(top, bottom + (count - 1) * size) + 1, size))
    out: list[int] = []
    if newest:
        t = top
        while len(out) < count and t >= bottom:
            out.append(t)
            t = floor_open(interval, t - 1)
        out.reverse()
        return out
    t = bottom
    while len(out) < count and t <= top:
        out.append(t)
        t = next_open(interval, t)
    return out


def _aggregate(
    conn: Connection, series: int, interval: str, buckets: list[int], hours: bool
) -> list[rs.Resampled]:
    """The non-empty ``buckets``, oldest first: those whose hours are all in the rollup from
    it, the others (forming, holes, open minutes) from their minutes."""
    if not hours or buckets[0] < 0:
        return _from_minutes(conn, series, interval, buckets)
    whole = rollup.whole(conn, series, interval, buckets)
    if not whole:
        return _from_minutes(conn, series, interval, buckets)
    done = {row[0] for row in whole}
    rest = [t for t in buckets if t not in done]
    if not rest:
        return whole
    return sorted(whole + _from_minutes(conn, series, interval, rest), key=lambda r: r[0])


def _from_minutes(
    conn: Connection, series: int, interval: str, buckets: list[int]
) -> list[rs.Resampled]:
    size = INTERVAL_MS[interval]
    if interval == "1M" or buckets[-1] - buckets[0] != (len(buckets) - 1) * size:
        ends = [next_open(interval, t) for t in buckets]
        params = {"series": series, "starts": buckets, "ends": ends}
        sql = _LISTED
    else:
        step = INTERVAL_MS[interval]
        params = {"series": series, "first": buckets[0], "last": buckets[-1], "step": step}
        sql = _EVERY
    rows = conn.execute(sql, params, binary=True).fetchall()
    out: list[rs.Resampled] = []
    for t, e, n, all_flags, any_flags, o, h, low, c, v, qv, trades in rows:
        closed = n == rs.expected_minutes(t, e) and all_flags & FLAG_CLOSED != 0
        source = (
            "rest" if any_flags & FLAG_REST else "archive" if any_flags & FLAG_ARCHIVE else "ws"
        )
        out.append((t, o, h, low, c, v, qv, trades, closed, source))
    return out
