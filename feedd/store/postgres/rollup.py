"""``candle_hours``: closed hours of the 1m series, kept by the writer so resamples to 1h and
longer read one row per hour instead of sixty.

An hour is in the table only while its 1m rows are 60 closed candles, and its row is then
their exact aggregate (numeric, as the resample computes it): the writer recomputes (or drops)
every hour its batch touches, in the batch's transaction; prune and wipe drop rows with their
minutes. A missing hour is never wrong (the reader falls back to the minutes); a stale one
would be, hence recomputed from ``candles`` after the upsert rather than patched.
"""

from __future__ import annotations

from collections.abc import Iterable

from feedd.intervals import HOUR_MS, MINUTE_MS, next_open
from feedd.store import resample as rs
from feedd.store.postgres.connection import Connection, int_array
from feedd.store.schema import FLAG_ARCHIVE, FLAG_REST

BASE_INTERVAL = rs.BASE_INTERVAL
#: intervals whose buckets are whole hours (UTC-aligned): their closed hours come from here
HOURLY = frozenset({"1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"})
MINUTES_PER_HOUR = HOUR_MS // MINUTE_MS

_COLUMNS = "series, open_time, open, high, low, close, volume, quote_volume, trades, flags"
_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "flags")

#: the hour's aggregate from a relation ``a`` (series, t, n, all_flags, any_flags, first, last,
#: high, low, volume, quote_volume, trades) of hours: open and close are key lookups
_FROM_AGGREGATE = f"""
INSERT INTO candle_hours AS h ({_COLUMNS})
SELECT a.series, a.t,
    (SELECT open FROM candles WHERE series = a.series AND open_time = a.first), a.high, a.low,
    (SELECT close FROM candles WHERE series = a.series AND open_time = a.last),
    a.volume, a.quote_volume, a.trades, a.any_flags
FROM {{hours}} AS a
WHERE a.n = {MINUTES_PER_HOUR} AND a.all_flags & 1 = 1
ORDER BY a.series, a.t
"""
_AGGREGATES = """count(*) AS n, bit_and(flags) AS all_flags, bit_or(flags) AS any_flags,
    min(open_time) AS first, max(open_time) AS last, max(high) AS high, min(low) AS low,
    sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades"""
#: floor to the hour, negative times included (``/`` and ``%`` truncate toward zero)
_HOUR_OF = f"(open_time - ((open_time % {HOUR_MS}) + {HOUR_MS}) % {HOUR_MS})"

_FILL = _FROM_AGGREGATE.format(
    hours=f"(SELECT series, {_HOUR_OF} AS t, {_AGGREGATES} FROM candles"
    " WHERE series IN (SELECT id FROM series WHERE \"interval\" = '1m') GROUP BY 1, 2)"
)
#: schema step: the table, filled from the 1m rows already stored
DDL = f"""
CREATE TABLE candle_hours (
    series integer NOT NULL,
    open_time bigint NOT NULL,
    open numeric NOT NULL,
    high numeric NOT NULL,
    low numeric NOT NULL,
    close numeric NOT NULL,
    volume numeric NOT NULL,
    quote_volume numeric NOT NULL,
    trades numeric,
    flags smallint NOT NULL,
    PRIMARY KEY (series, open_time)
);
{_FILL};
"""

# An hour can only be whole once its first and last minutes are stored and closed: two key
# lookups spare the aggregate of the hour still forming (most hours a live batch touches).
_RECOMPUTE = f"""
WITH k AS (
    SELECT DISTINCT * FROM unnest(%(series)s::integer[], %(hours)s::bigint[]) AS k(series, t)
), a AS (
    SELECT k.series, k.t, x.* FROM k CROSS JOIN LATERAL (
        SELECT {_AGGREGATES} FROM candles
        WHERE series = k.series AND open_time >= k.t AND open_time < k.t + {HOUR_MS}
            AND EXISTS (SELECT FROM candles WHERE series = k.series AND open_time = k.t
                AND flags & 1 = 1)
            AND EXISTS (SELECT FROM candles WHERE series = k.series
                AND open_time = k.t + {HOUR_MS - MINUTE_MS} AND flags & 1 = 1)
    ) AS x
), gone AS (
    DELETE FROM candle_hours AS h USING a
    WHERE h.series = a.series AND h.open_time = a.t
        AND NOT (a.n = {MINUTES_PER_HOUR} AND a.all_flags & 1 = 1)
)
{_FROM_AGGREGATE.format(hours="a")}
ON CONFLICT (series, open_time) DO UPDATE SET
    {", ".join(f"{v} = excluded.{v}" for v in _VALUES)}
WHERE ({", ".join(f"h.{v}" for v in _VALUES)})::text
    IS DISTINCT FROM ({", ".join(f"excluded.{v}" for v in _VALUES)})::text
"""


def refresh(conn: Connection, touched: Iterable[tuple[int, int]]) -> None:
    """Recompute (or drop) the hours of the 1m rows ``(series, open_time)`` just written, from
    what ``candles`` holds now (the caller holds the series' row locks)."""
    hours = sorted({(sid, t - t % HOUR_MS) for sid, t in touched})
    if hours:
        series, starts = int_array(h[0] for h in hours), int_array(h[1] for h in hours)
        conn.execute(_RECOMPUTE, {"series": series, "hours": starts})


def prune(conn: Connection, series: int, cutoff: int) -> None:
    """Drop the hours that lost minutes when those up to ``cutoff`` were deleted."""
    conn.execute("DELETE FROM candle_hours WHERE series = %s AND open_time <= %s", (series, cutoff))


def wipe(conn: Connection) -> None:
    conn.execute("DELETE FROM candle_hours")


def _bucket_sql(interval: str) -> str:
    """The bucket of the hour at ``open_time`` (>= 0 here: buckets from the epoch on)."""
    if interval == "1M":
        return (
            "(extract(epoch FROM date_trunc('month',"
            " to_timestamp(open_time / 1000) AT TIME ZONE 'UTC')) * 1000)::bigint"
        )
    off = 4 * 24 * HOUR_MS if interval == "1w" else 0
    size = next_open(interval, 0)
    return f"((open_time - {off}) / {size} * {size} + {off})"


#: 1h: the rows themselves (grouping and the open/close lookups cost twice the reading)
_HOURS_SQL = """
SELECT open_time, 1, flags, open::float8, high::float8, low::float8, close::float8,
    volume::float8, quote_volume::float8, trades::bigint
FROM candle_hours WHERE series = %(series)s AND open_time >= %(lo)s AND open_time < %(hi)s
ORDER BY open_time
"""


def _read_sql(interval: str) -> str:
    if interval == "1h":
        return _HOURS_SQL
    return f"""
SELECT g.t, g.n, g.any_flags,
    (SELECT open FROM candle_hours WHERE series = %(series)s AND open_time = g.first)::float8,
    g.high::float8, g.low::float8,
    (SELECT close FROM candle_hours WHERE series = %(series)s AND open_time = g.last)::float8,
    g.volume::float8, g.quote_volume::float8, g.trades::bigint
FROM (
    SELECT {_bucket_sql(interval)} AS t, count(*) AS n, bit_or(flags) AS any_flags,
        min(open_time) AS first, max(open_time) AS last, max(high) AS high, min(low) AS low,
        sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades
    FROM candle_hours WHERE series = %(series)s AND open_time >= %(lo)s AND open_time < %(hi)s
    GROUP BY 1
) AS g
ORDER BY g.t
"""


def whole(conn: Connection, series: int, interval: str, buckets: list[int]) -> list[rs.Resampled]:
    """The ``buckets`` (ascending open times, from the epoch on) whose every hour is in the
    table: closed, and the same candles the minutes give."""
    lo, hi = buckets[0], next_open(interval, buckets[-1])
    rows = conn.execute(
        _read_sql(interval), {"series": series, "lo": lo, "hi": hi}, binary=True
    ).fetchall()
    out: list[rs.Resampled] = []
    for t, n, flags, o, h, low, c, v, qv, trades in rows:
        if n * HOUR_MS == next_open(interval, t) - t:
            source = "rest" if flags & FLAG_REST else "archive" if flags & FLAG_ARCHIVE else "ws"
            out.append((t, o, h, low, c, v, qv, trades, True, source))
    return out
