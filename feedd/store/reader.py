"""Reads for the API: worker threads on read-only connections, values decoded inside SQLite.

A missing database (or one the writer has not initialised yet) reads as empty; pooled
connections to a file since deleted or replaced are dropped at their next use.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import orjson
import trio

from feedd.errors import StoreError
from feedd.store import coverage as cov
from feedd.store import nodes as node_rows
from feedd.store import resample as rs
from feedd.store.codec import sql_decode
from feedd.store.database import FileIdentity, file_identity
from feedd.store.export import Export, ExportRequest, connect_arrow
from feedd.store.schema import (
    FLAG_ARCHIVE,
    FLAG_CLOSED,
    FLAG_REST,
    connect_reader,
    source_name,
    store_error,
)

T = TypeVar("T")

_MIN_T, _MAX_T = -(2**63), 2**63 - 1
_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")
_SERIES_ID = "(SELECT id FROM series WHERE exchange = ? AND symbol = ? AND interval = ?)"
_CANDLES_SQL = f"""
SELECT open_time, {", ".join(sql_decode(c) for c in _FIELDS[1:7])}, trades, flags
FROM candles WHERE series = {_SERIES_ID} AND open_time >= ? AND open_time <= ?
ORDER BY open_time {{order}} LIMIT ?
"""


@attrs.frozen
class CandleRow:
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int | None
    closed: bool
    source: str  # "ws" | "rest" | "archive"


@attrs.frozen
class SeriesInfo:
    exchange: str
    symbol: str
    interval: str
    count: int
    first_open_time: int
    last_open_time: int


Row = tuple[Any, ...]


@attrs.frozen
class JsonPage:
    """A page of candles serialised as a JSON array, with what a cursor needs."""

    body: bytes
    count: int
    first_open_time: int | None = None
    last_open_time: int | None = None


_EMPTY_PAGE = JsonPage(b"[]", 0)


def _to_dict(row: Row) -> dict[str, Any]:
    d = dict(zip(_FIELDS, row, strict=False))
    flags = row[8]
    d["closed"] = bool(flags & FLAG_CLOSED)
    d["source"] = source_name(flags)
    return d


class Reader:
    """Pooled read-only connections; safe to share between tasks, one query per thread."""

    def __init__(self, path: Path, *, max_threads: int = 4) -> None:
        self.path = path
        self._limiter = trio.CapacityLimiter(max_threads)
        #: idle connections with the file each has open
        self._idle: list[tuple[sqlite3.Connection, FileIdentity]] = []
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
        rows = await self._candle_rows(exchange, symbol, interval, since, until, limit)
        return [
            CandleRow(t, o, h, lo, c, v, qv, n, bool(flags & FLAG_CLOSED), _source(flags))
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
        """``candles`` as JSON objects (CandleRow's field names), serialised in the worker
        thread to keep the event loop free."""

        def query(conn: sqlite3.Connection) -> JsonPage:
            rows = _candles_query(conn, (exchange, symbol, interval), since, until, limit)
            return _page(orjson.dumps([_to_dict(r) for r in rows]), [r[0] for r in rows])

        return await self._run(query, _EMPTY_PAGE)

    async def _candle_rows(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None,
        until: int | None,
        limit: int,
    ) -> list[Row]:
        key = (exchange, symbol, interval)
        return await self._run(lambda c: _candles_query(c, key, since, until, limit), [])

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None:
        """Open time of the newest stored closed candle (older than ``before`` if given)."""
        bound = (1 << 62) if before is None else before

        def query(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                f"SELECT open_time FROM candles WHERE series = {_SERIES_ID}"
                " AND open_time < ? AND flags & 1 ORDER BY open_time DESC LIMIT 1",
                (exchange, symbol, interval, bound),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(query, None)

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]:
        """Open times of the stored closed candles in [start, end], ascending."""

        def query(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                f"SELECT open_time FROM candles WHERE series = {_SERIES_ID}"
                " AND open_time >= ? AND open_time <= ? AND flags & 1 ORDER BY open_time",
                (exchange, symbol, interval, start, end),
            ).fetchall()
            return [int(r[0]) for r in rows]

        return await self._run(query, [])

    async def series(self) -> list[SeriesInfo]:
        """Every series with its candle count and time range (count walks the series' rows)."""

        def query(conn: sqlite3.Connection) -> list[SeriesInfo]:
            rows = conn.execute(
                "SELECT exchange, symbol, interval, count(*), min(open_time), max(open_time)"
                " FROM series JOIN candles ON candles.series = series.id"
                " GROUP BY series.id ORDER BY exchange, symbol, interval"
            ).fetchall()
            return [SeriesInfo(*r) for r in rows]

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
        """``interval`` candles built from stored 1m candles, same since/until/limit rules as
        ``candles``; see ``feedd.store.resample`` for when a bucket counts as closed."""
        if interval == rs.BASE_INTERVAL:
            return await self.candles(exchange, symbol, interval, since, until, limit)

        def query(conn: sqlite3.Connection) -> list[CandleRow]:
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

        def query(conn: sqlite3.Connection) -> JsonPage:
            rows = _resample_query(conn, exchange, symbol, interval, since, until, limit)
            body = orjson.dumps([attrs.asdict(row) for row in rows])
            return _page(body, [r.open_time for r in rows])

        return await self._run(query, _EMPTY_PAGE)

    async def coverage(
        self, exchange: str | None = None, symbol: str | None = None, interval: str | None = None
    ) -> list[cov.SeriesCoverage]:
        """First and last closed candle, count and holes of every matching series, from the
        runs the writer keeps (no candle is read)."""
        return await self._run(lambda c: cov.read(c, exchange, symbol, interval), [])

    async def sources(self, exchange: str, symbol: str, interval: str) -> dict[str, int]:
        """Closed candles of one series by where they came from (reads the series' rows)."""

        def query(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                f"SELECT flags & {FLAG_REST | FLAG_ARCHIVE}, count(*) FROM candles"
                f" WHERE series = {_SERIES_ID} AND flags & {FLAG_CLOSED} GROUP BY 1",
                (exchange, symbol, interval),
            ).fetchall()
            found = dict.fromkeys(_SOURCES, 0)
            for flags, n in rows:
                found[source_name(flags)] += int(n)
            return found

        return await self._run(query, dict.fromkeys(_SOURCES, 0))

    async def nodes(self) -> list[node_rows.NodeRecord]:
        return await self._run(node_rows.read, [])

    async def export(self, request: ExportRequest) -> AsyncIterator[bytes]:
        """``request``'s file a chunk at a time, each read and encoded in a worker thread on a
        connection of its own (see ``feedd.store.export``): memory stays constant."""

        def connect() -> sqlite3.Connection:
            if not self.path.exists():
                return sqlite3.connect(":memory:", check_same_thread=False)
            return connect_reader(self.path)

        def step(job: Export) -> bytes | None:
            try:
                return job.next_chunk()
            except sqlite3.Error as exc:
                raise store_error(exc, "cannot read", self.path) from exc

        job = Export(connect, request, lambda: connect_arrow(self.path))
        try:
            while (
                chunk := await trio.to_thread.run_sync(step, job, limiter=self._limiter)
            ) is not None:
                if chunk:
                    yield chunk
        finally:
            job.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T], empty: T) -> T:
        return await trio.to_thread.run_sync(self._call, fn, empty, limiter=self._limiter)

    def _call(self, fn: Callable[[sqlite3.Connection], T], empty: T) -> T:
        if self._closed:
            raise StoreError("reader is closed")
        try:
            # One stat a query: a connection keeps reading a deleted file for ever.
            identity = file_identity(self.path)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        stale = []
        with self._lock:
            conn = None
            while self._idle and conn is None:
                candidate, opened = self._idle.pop()
                if opened == identity:
                    conn = candidate
                else:
                    stale.append(candidate)
        for old in stale:
            old.close()
        if identity is None:
            return empty
        try:
            if conn is None:
                conn = connect_reader(self.path)
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return empty  # the writer has not created the schema yet
            raise store_error(exc, "cannot read", self.path) from exc
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot read", self.path) from exc
        finally:
            if conn is not None:
                with self._lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._idle.append((conn, identity))


def database_bytes(path: Path) -> int:
    """Bytes on disk of the database, its WAL and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def _page(body: bytes, open_times: list[int]) -> JsonPage:
    if not open_times:
        return JsonPage(body, 0)
    return JsonPage(body, len(open_times), open_times[0], open_times[-1])


_SOURCES = ("ws", "rest", "archive")
_source = source_name


def _candles_query(
    conn: sqlite3.Connection,
    key: tuple[str, str, str],
    since: int | None,
    until: int | None,
    limit: int,
) -> list[Row]:
    lo = _MIN_T if since is None else since
    hi = _MAX_T if until is None else until
    if since is not None:
        return conn.execute(_CANDLES_SQL.format(order="ASC"), (*key, lo, hi, limit)).fetchall()
    rows = conn.execute(_CANDLES_SQL.format(order="DESC"), (*key, lo, hi, limit)).fetchall()
    rows.reverse()
    return rows


def _resample_query(
    conn: sqlite3.Connection,
    exchange: str,
    symbol: str,
    interval: str,
    since: int | None,
    until: int | None,
    limit: int,
) -> list[CandleRow]:
    start = _MIN_T if since is None else rs.first_bucket_at_or_after(interval, since)
    end = _MAX_T if until is None else rs.end_after_bucket_of(interval, until)
    found = rs.query(
        conn, exchange, symbol, interval, start, end, newest=since is None, limit=limit
    )
    return [CandleRow(*row) for row in found]
