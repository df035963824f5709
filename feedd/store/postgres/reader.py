"""Reads for the API from PostgreSQL: the same answers as SQLite's ``Reader``, never blocking
the event loop.

A few pooled autocommit connections, each query run in a worker thread under a limiter (a page
of candles on the loop itself, over libpq's non-blocking calls, when a connection is idle). Values
are ``numeric``; they leave as the nearest float (``::float8`` rounds correctly), so a page's
JSON is byte for byte SQLite's for the same candles. A store whose schema does not exist yet
reads as empty; a connection that broke (a restarted server, a terminated backend) is dropped
and the query tried once more on a new one. The first connection is opened in the background
when the reader is made, so the first request does not wait for a connect and its password
exchange; a server away then is no error (the first query connects, or fails, itself).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import psycopg
import trio

from feedd.errors import StoreError
from feedd.store import pagejson
from feedd.store.exportrequest import ExportRequest
from feedd.store.nodes import NodeRecord
from feedd.store.postgres import loopread, nodes
from feedd.store.postgres import resample as pg_rs
from feedd.store.postgres.connection import Connection as Conn
from feedd.store.postgres.connection import connect, location, store_error
from feedd.store.sqlreader import (
    FIELDS,
    MAX_T,
    MIN_T,
    SERIES_ID,
    JsonPage,
    Row,
    SqlReader,
)
from feedd.store.sqlreader import page as rows_page

T = TypeVar("T")
log = logging.getLogger("feedd.store")
#: how long ``close`` waits for the background first connect (a server that answers takes ms)
WARM_JOIN_S = 2.0

_CANDLES_SQL = f"""
SELECT open_time, {", ".join(f"{c}::float8" for c in FIELDS[1:7])}, trades, flags
FROM candles WHERE series = {SERIES_ID.replace("?", "%s")} AND open_time >= %s
AND open_time <= %s ORDER BY open_time {{order}} LIMIT %s
"""
#: the same, run on the event loop
_LOOP_CANDLES = {
    order: loopread.Statement(f"feedd_candles_{order.lower()}", _CANDLES_SQL.format(order=order))
    for order in ("ASC", "DESC")
}
#: text sorts byte-wise, as in SQLite, whatever the database's collation
_BY_NAME = 'series.exchange COLLATE "C", series.symbol COLLATE "C", series.interval COLLATE "C"'


class PgReader(SqlReader[Conn]):
    """Pooled connections to one PostgreSQL database; safe to share between tasks."""

    PLACEHOLDER = "%s"
    BY_NAME = _BY_NAME

    def __init__(self, dsn: str, *, max_connections: int = 4) -> None:
        self.location = location(dsn)
        self._dsn = dsn
        self._limiter = trio.CapacityLimiter(max_connections)
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        #: set once the background first connect has ended, pooled or not
        self.warmed = threading.Event()
        self._warmer: threading.Thread | None = None

    def warm(self) -> None:
        """Open the pool's first connection in a thread of its own; returns at once."""
        if self._warmer is None:
            self._warmer = threading.Thread(
                target=self._warm, name="feedd-pg-reader-warm", daemon=True
            )
            self._warmer.start()

    def _warm(self) -> None:
        try:
            conn = self._connect()
        except StoreError as exc:
            log.debug("reader: no first connection at start (%s)", exc)
        else:
            self._release(conn)  # closed at once if the reader closed meanwhile
        finally:
            self.warmed.set()

    def _candle_rows(
        self,
        conn: Conn,
        key: tuple[str, str, str],
        since: int | None,
        until: int | None,
        limit: int,
    ) -> list[Row]:
        # Binary results: floats and ints arrive as machine values, ~25 % faster than text.
        order, params = _candles_query(key, since, until, limit)
        rows = conn.execute(_CANDLES_SQL.format(order=order), params, binary=True).fetchall()
        if since is None:
            rows.reverse()
        return rows

    async def candles_json(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> JsonPage:
        """``SqlReader.candles_json``, its query run on the event loop over an idle pooled
        connection (``loopread``): no worker thread to wake. In a worker thread when no
        connection is idle, or when the loop got no rows (its errors and retries are the
        worker's)."""
        key = (exchange, symbol, interval)
        async with self._limiter:  # a slot, as a worker's query takes: connections stay bounded
            conn = self._idle_connection()
            if conn is not None:
                order, params = _candles_query(key, since, until, limit)
                try:
                    rows = await _LOOP_CANDLES[order].rows(conn, params)
                except loopread.NotFetched as exc:
                    if exc.idle:
                        self._release(conn)
                    else:
                        conn.close()
                except BaseException:
                    conn.close()  # mid-query (cancelled): of no use to anyone else
                    raise
                else:
                    self._release(conn)
                    if since is None:
                        rows.reverse()
                    return rows_page(pagejson.stored(rows), rows)
        return await super().candles_json(exchange, symbol, interval, since, until, limit)

    def _idle_connection(self) -> Conn | None:
        """An idle pooled connection, taken from the pool, if there is one and a slot."""
        with self._lock:
            if self._closed or not self._idle:
                return None
            return self._idle.pop()

    def _resampled(
        self,
        conn: Conn,
        key: tuple[str, str, str],
        start: int,
        end: int,
        *,
        newest: bool,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        return pg_rs.query(conn, *key, start, end, newest=newest, limit=limit)

    def _nodes(self, conn: Conn) -> list[NodeRecord]:
        return nodes.read(conn)

    async def export(self, request: ExportRequest) -> AsyncIterator[bytes]:
        """``request``'s file a chunk at a time, each a keyset page read and encoded in a
        worker thread on a pooled connection (see ``feedd.store.postgres.export``)."""
        from feedd.store.postgres.export import PgExport  # pyarrow only once asked for

        job = PgExport(request)
        try:
            while (chunk := await self._run(job.next_chunk, None, empty_schema=False)) is not None:
                if chunk:
                    yield chunk
        finally:
            job.close()  # the pages it asked for ahead: a client that left needs them no more

    def close(self) -> None:
        if self._warmer is not None:
            # Its connection is pooled or closed before close() returns (unless the server
            # is so slow to answer that the thread outlives this wait: it closes it then).
            self._warmer.join(WARM_JOIN_S)
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


def _candles_query(
    key: tuple[str, str, str], since: int | None, until: int | None, limit: int
) -> tuple[str, tuple[int | str | None, ...]]:
    """The order of ``_CANDLES_SQL`` and its parameters for a page."""
    lo = MIN_T if since is None else since
    hi = MAX_T if until is None else until
    most = limit if limit >= 0 else None  # SQLite's LIMIT -1: no limit
    return ("ASC" if since is not None else "DESC"), (*key, lo, hi, most)


def _disconnected(exc: psycopg.Error) -> bool:
    """The connection was lost (server stopped or restarted, backend terminated)."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )
