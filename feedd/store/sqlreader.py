"""What every SQL backend's reader answers, written once: the values it returns and the
queries whose SQL is the same on SQLite and PostgreSQL. A backend supplies how a query runs
(its pool, its threads, its errors) and the few reads whose SQL is its own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import attrs

from feedd.store import coverage as cov
from feedd.store import pagejson
from feedd.store import resample as rs
from feedd.store.nodes import NodeRecord
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST, source_name

T = TypeVar("T")

MIN_T, MAX_T = -(2**63), 2**63 - 1
FIELDS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")
SOURCES = ("ws", "rest", "archive")
#: the series' id from its names (placeholders written ``?``: see ``SqlReader._sql``)
SERIES_ID = "(SELECT id FROM series WHERE exchange = ? AND symbol = ? AND interval = ?)"
Row = tuple[Any, ...]


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


@attrs.frozen
class JsonPage:
    """A page of candles serialised as a JSON array, with what a cursor needs."""

    body: bytes
    count: int
    first_open_time: int | None = None
    last_open_time: int | None = None


EMPTY_PAGE = JsonPage(b"[]", 0)


def page(body: bytes, rows: Sequence[Row]) -> JsonPage:
    """``body`` of ``rows`` (each starting with its open time, oldest first)."""
    if not rows:
        return JsonPage(body, 0)
    return JsonPage(body, len(rows), rows[0][0], rows[-1][0])


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


C = TypeVar("C", bound=Connection)


class SqlReader(abc.ABC, Generic[C]):
    """The ReadStore methods in terms of a backend's ``_run`` and its own queries."""

    #: the driver's placeholder for ``?`` in the shared SQL
    PLACEHOLDER: ClassVar[str] = "?"
    #: series sorted by name, byte-wise on every backend
    BY_NAME: ClassVar[str] = "series.exchange, series.symbol, series.interval"
    #: rows (id, n, lo, hi): each series' row count and first and last open time, in parts
    #: that ``series`` adds up (SQLite: one per table under the view ``candles``)
    SERIES_STATS: ClassVar[str] = (
        "SELECT series AS id, count(*) AS n, min(open_time) AS lo, max(open_time) AS hi"
        " FROM candles GROUP BY series"
    )

    @abc.abstractmethod
    async def _run(self, fn: Callable[[C], T], empty: T) -> T:
        """``fn`` on a connection off the event loop; ``empty`` if the store has no schema."""

    @abc.abstractmethod
    def _candle_rows(
        self, conn: C, key: tuple[str, str, str], since: int | None, until: int | None, limit: int
    ) -> list[Row]:
        """Stored rows oldest first: (open_time, six floats, trades, flags)."""

    @abc.abstractmethod
    def _resampled(
        self,
        conn: C,
        key: tuple[str, str, str],
        start: int,
        end: int,
        *,
        newest: bool,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """Resampled buckets in [start, end) as CandleRow fields."""

    @abc.abstractmethod
    def _nodes(self, conn: C) -> list[NodeRecord]: ...

    def _sql(self, text: str) -> str:
        return text if self.PLACEHOLDER == "?" else text.replace("?", self.PLACEHOLDER)

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
        rows = await self._run(lambda c: self._candle_rows(c, key, since, until, limit), none)
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
        """``candles`` as JSON objects (CandleRow's field names), serialised in the worker
        thread to keep the event loop free."""

        def query(conn: C) -> JsonPage:
            rows = self._candle_rows(conn, (exchange, symbol, interval), since, until, limit)
            return page(pagejson.stored(rows), rows)

        return await self._run(query, EMPTY_PAGE)

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None:
        """Open time of the newest stored closed candle (older than ``before`` if given)."""
        bound = (1 << 62) if before is None else before
        sql = self._sql(
            f"SELECT open_time FROM candles WHERE series = {SERIES_ID} AND open_time < ?"
            f" AND flags & {FLAG_CLOSED} <> 0 ORDER BY open_time DESC LIMIT 1"
        )

        def query(conn: C) -> int | None:
            row = conn.execute(sql, (exchange, symbol, interval, bound)).fetchone()
            return None if row is None else int(row[0])

        return await self._run(query, None)

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]:
        """Open times of the stored closed candles in [start, end], ascending."""
        sql = self._sql(
            f"SELECT open_time FROM candles WHERE series = {SERIES_ID} AND open_time >= ?"
            f" AND open_time <= ? AND flags & {FLAG_CLOSED} <> 0 ORDER BY open_time"
        )

        def query(conn: C) -> list[int]:
            rows = conn.execute(sql, (exchange, symbol, interval, start, end)).fetchall()
            return [int(r[0]) for r in rows]

        return await self._run(query, [])

    async def series(self) -> list[SeriesInfo]:
        """Every series with its candle count and time range (count walks the series' rows)."""
        sql = (
            "SELECT series.exchange, series.symbol, series.interval, sum(a.n), min(a.lo),"
            f" max(a.hi) FROM ({self.SERIES_STATS}) AS a JOIN series ON series.id = a.id"
            f" GROUP BY series.id ORDER BY {self.BY_NAME}"
        )

        def query(conn: C) -> list[SeriesInfo]:
            rows = conn.execute(sql).fetchall()
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
        """``interval`` candles built from stored 1m candles, same since/until/limit rules as
        ``candles``; see ``feedd.store.resample`` for when a bucket counts as closed."""
        if interval == rs.BASE_INTERVAL:
            return await self.candles(exchange, symbol, interval, since, until, limit)
        key = (exchange, symbol, interval)
        return await self._run(lambda c: self._resample_rows(c, key, since, until, limit), [])

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
        key = (exchange, symbol, interval)

        def query(conn: C) -> JsonPage:
            rows = self._resampled_range(conn, key, since, until, limit)
            return page(pagejson.resampled(rows), rows)

        return await self._run(query, EMPTY_PAGE)

    async def coverage(
        self, exchange: str | None = None, symbol: str | None = None, interval: str | None = None
    ) -> list[cov.SeriesCoverage]:
        """First and last closed candle, count and holes of every matching series, from the
        runs the writer keeps (no candle is read)."""

        def query(conn: C) -> list[cov.SeriesCoverage]:
            return cov.read(
                conn,
                exchange,
                symbol,
                interval,
                placeholder=self.PLACEHOLDER,
                by_name=self.BY_NAME,
            )

        return await self._run(query, [])

    async def sources(self, exchange: str, symbol: str, interval: str) -> dict[str, int]:
        """Closed candles of one series by where they came from (reads the series' rows)."""
        sql = self._sql(
            f"SELECT flags & {FLAG_REST | FLAG_ARCHIVE}, count(*) FROM candles"
            f" WHERE series = {SERIES_ID} AND flags & {FLAG_CLOSED} <> 0 GROUP BY 1"
        )

        def query(conn: C) -> dict[str, int]:
            found = dict.fromkeys(SOURCES, 0)
            for flags, n in conn.execute(sql, (exchange, symbol, interval)).fetchall():
                found[source_name(flags)] += int(n)
            return found

        return await self._run(query, dict.fromkeys(SOURCES, 0))

    async def nodes(self) -> list[NodeRecord]:
        return await self._run(self._nodes, [])

    def _resample_rows(
        self,
        conn: C,
        key: tuple[str, str, str],
        since: int | None,
        until: int | None,
        limit: int,
    ) -> list[CandleRow]:
        return [CandleRow(*row) for row in self._resampled_range(conn, key, since, until, limit)]

    def _resampled_range(
        self,
        conn: C,
        key: tuple[str, str, str],
        since: int | None,
        until: int | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        interval = key[2]
        start = MIN_T if since is None else rs.first_bucket_at_or_after(interval, since)
        end = MAX_T if until is None else rs.end_after_bucket_of(interval, until)
        return self._resampled(conn, key, start, end, newest=since is None, limit=limit)
