"""Reads for the API from PostgreSQL: the same answers as SQLite's ``Reader``, off the event loop.

A few pooled autocommit connections, each query run in a worker thread under a limiter. Values
are ``numeric``; they leave as the nearest float (``::float8`` rounds correctly), so a page's
JSON is byte for byte SQLite's for the same candles. A store whose schema does not exist yet
reads as empty; a connection that broke (a restarted server, a terminated backend) is dropped
and the query tried once more on a new one.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import attrs
import orjson
import psycopg
import trio

from feedd.errors import StoreError
from feedd.store import coverage as cov
from feedd.store import resample as rs
from feedd.store.export import ExportRequest
from feedd.store.nodes import NodeRecord
from feedd.store.postgres import nodes
from feedd.store.postgres import resample as pg_rs
from feedd.store.postgres.connection import Connection as Conn
from feedd.store.postgres.connection import connect, location, store_error
from feedd.store.postgres.export import PgExport
from feedd.store.reader import CandleRow, JsonPage, SeriesInfo
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST, source_name

T = TypeVar("T")

_MIN_T, _MAX_T = -(2**63), 2**63 - 1
_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")
_SERIES_ID = "(SELECT id FROM series WHERE exchange = %s AND symbol = %s AND interval = %s)"
_CANDLES_SQL = f"""
SELECT open_time, {", ".join(f"{c}::float8" for c in _FIELDS[1:7])}, trades, flags
FROM candles WHERE series = {_SERIES_ID} AND open_time >= %s AND open_time <= %s
ORDER BY open_time {{order}} LIMIT %s
"""
#: text sorts byte-wise, as in SQLite, whatever the database's collation
_BY_NAME = 'series.exchange COLLATE "C", series.symbol COLLATE "C", series.interval COLLATE "C"'
_SOURCES = ("ws", "rest", "archive")
_EMPTY_PAGE = JsonPage(b"[]", 0)
Row = tuple[Any, ...]


class PgReader:
    """Pooled connections to one PostgreSQL database; safe to share between tasks."""

    def __init__(self, dsn: str, *, max_connections: int = 4) -> None:
        self.location = location(dsn)
        self._dsn = dsn
        self._limiter = trio.CapacityLimiter(max_connections)
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    async def candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> list[CandleRow]:
        """Candles oldest first. With ``since``: the first ``limit`` from it; otherwise the
        newest ``limit`` up to ``until``."""
        key = (exchange, symbol, interval)
        none: list[Row] = []
        rows = await self._run(lambda c: _candles_query(c, key, since, until, limit), none)
        return [
            CandleRow(t, o, h, lo, c, v, qv, n, bool(flags & FLAG_CLOSED), source_name(flags))
            for t, o, h, lo, c, v, qv, n, flags in rows
        ]

    async def candles_json(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> JsonPage:
        """``candles`` as JSON objects, serialised in the worker thread."""

        def query(conn: Conn) -> JsonPage:
            rows = _candles_query(conn, (exchange, symbol, interval), since, until, limit)
            return _page(orjson.dumps([_to_dict(r) for r in rows]), [r[0] for r in rows])

        return await self._run(query, _EMPTY_PAGE)

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None:
        """Open time of the newest stored closed candle (older than ``before`` if given)."""
        bound = (1 << 62) if before is None else before

        def query(conn: Conn) -> int | None:
            row = conn.execute(
                f"SELECT open_time FROM candles WHERE series = {_SERIES_ID}"
                f" AND open_time < %s AND flags & {FLAG_CLOSED} <> 0"
                " ORDER BY open_time DESC LIMIT 1",
                (exchange, symbol, interval, bound),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(query, None)

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]:
        """Open times of the stored closed candles in [start, end], ascending."""

        def query(conn: Conn) -> list[int]:
            rows = conn.execute(
                f"SELECT open_time FROM candles WHERE series = {_SERIES_ID}"
                f" AND open_time >= %s AND open_time <= %s AND flags & {FLAG_CLOSED} <> 0"
                " ORDER BY open_time",
                (exchange, symbol, interval, start, end),
            ).fetchall()
            return [int(r[0]) for r in rows]

        return await self._run(query, [])

    async def series(self) -> list[SeriesInfo]:
        """Every series with its candle count and time range."""

        def query(conn: Conn) -> list[SeriesInfo]:
            rows = conn.execute(
                "SELECT series.exchange, series.symbol, series.interval, count(*),"
                " min(open_time), max(open_time)"
                " FROM series JOIN candles ON candles.series = series.id"
                f" GROUP BY series.id ORDER BY {_BY_NAME}"
            ).fetchall()
            return [SeriesInfo(ex, sym, iv, int(n), lo, hi) for ex, sym, iv, n, lo, hi in rows]

        return await self._run(query, [])

    async def resample(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> list[CandleRow]:
        """``interval`` candles built from stored 1m candles in SQL, same since/until/limit
        rules as ``candles``; see ``feedd.store.resample`` for when a bucket is closed."""
        if interval == rs.BASE_INTERVAL:
            return await self.candles(exchange, symbol, interval, since, until, limit)

        def query(conn: Conn) -> list[CandleRow]:
            return _resample_query(conn, exchange, symbol, interval, since, until, limit)

        return await self._run(query, [])

    async def resample_json(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> JsonPage:
        """``resample`` as JSON, serialised in the worker thread like ``candles_json``."""
        if interval == rs.BASE_INTERVAL:
            return await self.candles_json(exchange, symbol, interval, since, until, limit)

        def query(conn: Conn) -> JsonPage:
            rows = _resample_query(conn, exchange, symbol, interval, since, until, limit)
            body = orjson.dumps([attrs.asdict(row) for row in rows])
            return _page(body, [r.open_time for r in rows])

        return await self._run(query, _EMPTY_PAGE)

    async def coverage(
        self, exchange: str | None = None, symbol: str | None = None, interval: str | None = None
    ) -> list[cov.SeriesCoverage]:
        """First and last closed candle, count and holes of every matching series, from the
        runs the writer keeps (no candle is read)."""

        def query(conn: Conn) -> list[cov.SeriesCoverage]:
            return _coverage(conn, exchange, symbol, interval)

        return await self._run(query, [])

    async def sources(self, exchange: str, symbol: str, interval: str) -> dict[str, int]:
        """Closed candles of one series by where they came from (reads the series' rows)."""

        def query(conn: Conn) -> dict[str, int]:
            rows = conn.execute(
                f"SELECT flags & {FLAG_REST | FLAG_ARCHIVE}, count(*) FROM candles"
                f" WHERE series = {_SERIES_ID} AND flags & {FLAG_CLOSED} <> 0 GROUP BY 1",
                (exchange, symbol, interval),
            ).fetchall()
            found = dict.fromkeys(_SOURCES, 0)
            for flags, n in rows:
                found[source_name(flags)] += int(n)
            return found

        return await self._run(query, dict.fromkeys(_SOURCES, 0))

    async def export(self, request: ExportRequest) -> AsyncIterator[bytes]:
        """``request``'s file a chunk at a time, each a keyset page read and encoded in a
        worker thread on a pooled connection (see ``feedd.store.postgres.export``)."""
        job = PgExport(request)
        while (chunk := await self._run(job.next_chunk, None, empty_schema=False)) is not None:
            if chunk:
                yield chunk

    async def nodes(self) -> list[NodeRecord]:
        return await self._run(nodes.read, [])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _run(self, fn: Callable[[Conn], T], empty: T, *, empty_schema: bool = True) -> T:
        return await trio.to_thread.run_sync(
            self._call, fn, empty, empty_schema, limiter=self._limiter
        )

    def _call(self, fn: Callable[[Conn], T], empty: T, empty_schema: bool) -> T:
        """``fn`` on a pooled connection; a pooled one found broken is replaced once (the
        server restarted or ended it while idle: nothing wrong with the query)."""
        with self._lock:
            if self._closed:
                raise StoreError("reader is closed")
            conn = self._idle.pop() if self._idle else None
        for retry in (conn is not None, False):
            if conn is None:
                conn = self._connect()
            try:
                result = fn(conn)
            except psycopg.Error as exc:
                if empty_schema and isinstance(exc, psycopg.errors.UndefinedTable):
                    self._release(conn)
                    return empty  # the writer has not created the schema yet
                if conn.broken or conn.closed:
                    conn.close()
                    conn = None
                    if retry and _disconnected(exc):
                        continue
                else:
                    self._release(conn)
                raise self._error(exc) from None
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> Conn:
        conn = connect(self._dsn, application_name="feedd-reader")
        try:
            # A resample's plan is costed for unknown ranges; JIT compiling it took ~1 s on a
            # query that runs in ~20 ms. Reads here are short: JIT never pays.
            conn.execute("SET jit = off")
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from None
        return conn

    def _release(self, conn: Conn) -> None:
        with self._lock:
            if not self._closed and not conn.broken:
                self._idle.append(conn)
                return
        conn.close()

    def _error(self, exc: psycopg.Error) -> StoreError:
        return store_error(exc, "cannot read", self._dsn)


def _disconnected(exc: psycopg.Error) -> bool:
    """The connection was lost (server stopped or restarted, backend terminated)."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )


def _to_dict(row: Row) -> dict[str, Any]:
    d = dict(zip(_FIELDS, row, strict=False))
    flags = row[8]
    d["closed"] = bool(flags & FLAG_CLOSED)
    d["source"] = source_name(flags)
    return d


def _page(body: bytes, open_times: list[int]) -> JsonPage:
    if not open_times:
        return JsonPage(body, 0)
    return JsonPage(body, len(open_times), open_times[0], open_times[-1])


def _candles_query(
    conn: Conn, key: tuple[str, str, str], since: int | None, until: int | None, limit: int
) -> list[Row]:
    lo = _MIN_T if since is None else since
    hi = _MAX_T if until is None else until
    most = limit if limit >= 0 else None  # SQLite's LIMIT -1: no limit
    order = "ASC" if since is not None else "DESC"
    # Binary results: floats and ints arrive as machine values, ~25 % faster than text.
    sql = _CANDLES_SQL.format(order=order)
    rows = conn.execute(sql, (*key, lo, hi, most), binary=True).fetchall()
    if since is None:
        rows.reverse()
    return rows


def _resample_query(
    conn: Conn,
    exchange: str,
    symbol: str,
    interval: str,
    since: int | None,
    until: int | None,
    limit: int,
) -> list[CandleRow]:
    start = _MIN_T if since is None else rs.first_bucket_at_or_after(interval, since)
    end = _MAX_T if until is None else rs.end_after_bucket_of(interval, until)
    found = pg_rs.query(
        conn, exchange, symbol, interval, start, end, newest=since is None, limit=limit
    )
    return [CandleRow(*row) for row in found]


def _coverage(
    conn: Conn, exchange: str | None, symbol: str | None, interval: str | None
) -> list[cov.SeriesCoverage]:
    """``feedd.store.coverage.read`` on PostgreSQL: the runs of every matching series."""
    where, args = [], []
    for column, value in (("exchange", exchange), ("symbol", symbol), ("interval", interval)):
        if value is not None:
            where.append(f"series.{column} = %s")
            args.append(value)
    rows = conn.execute(
        'SELECT series.exchange, series.symbol, series.interval, runs.start, runs."end"'
        " FROM runs JOIN series ON series.id = runs.series"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f' ORDER BY {_BY_NAME}, runs."end"',
        args,
    ).fetchall()
    out: list[cov.SeriesCoverage] = []
    group: list[Sequence[int]] = []
    names: tuple[str, str, str] | None = None
    for ex, sym, iv, start, end in rows:
        if names is not None and (ex, sym, iv) != names:
            out.append(cov._coverage(names, group))
            group = []
        names = (ex, sym, iv)
        group.append((start, end))
    if names is not None:
        out.append(cov._coverage(names, group))
    return out
