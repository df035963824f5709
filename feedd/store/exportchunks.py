"""Where an export's chunks come from: a stored series by keyset pages (through sqlite3 in
feedd's threads, or ADBC in the export worker), resampled candles through sqlite3, and a
read-ahead that overlaps reading the next chunk with encoding this one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import pyarrow as pa

from feedd.intervals import next_open
from feedd.store import resample as rs
from feedd.store.export import (
    VALUES,
    Chunk,
    ChunkReader,
    Export,
    resampled_chunk,
    stored_chunk,
)
from feedd.store.exportrequest import ExportRequest

STORED_SQL = (
    f"SELECT open_time, {', '.join(VALUES)}, trades, flags FROM candles"
    " WHERE series = ? AND open_time >= ? AND open_time <= ? ORDER BY open_time LIMIT ?"
)
STORED_COLUMNS = ("open_time", *VALUES, "trades", "flags")
SERIES_SQL = "SELECT id FROM series WHERE exchange = ? AND symbol = ? AND interval = ?"
#: where the newest rows up to ``until`` begin: a limit without ``since`` means the newest
#: rows, as on ``/ohlcv``'s JSON
NEWEST_SQL = (
    "SELECT open_time FROM candles WHERE series = ? AND open_time <= ?"
    " ORDER BY open_time DESC LIMIT 1 OFFSET ?"
)
MIN_T, MAX_T = -(2**63), 2**63 - 1


class ReadAhead:
    """A ``ChunkReader`` that reads the next chunk in ``pool``'s thread while this one is
    encoded and sent: reading (SQLite, ~45 % of a CSV export's CPU) and encoding (Arrow) both
    run mostly without the GIL, so an export uses a core left free: a year of 1m as Parquet
    took 0.61-0.68 s for 0.96-1.03 s of CPU at load 1.5 on 2 cores (at load 4-5 there is no
    free core, and it made no difference). A read ahead asks for as many rows as the last; a
    smaller ask after it (the end of a limit) takes the first rows and keeps the rest."""

    def __init__(self, chunks: ChunkReader, pool: ThreadPoolExecutor) -> None:
        self._chunks = chunks
        self._pool = pool
        self._ahead: Future[Chunk | None] | None = None
        self._held: Chunk | None = None

    def read(self, budget: int) -> Chunk | None:
        chunk = self._held
        self._held = None
        if chunk is None:
            ahead, self._ahead = self._ahead, None
            chunk = (ahead or self._pool.submit(self._chunks.read, budget)).result()
            if chunk is None:
                return None
            self._ahead = self._pool.submit(self._chunks.read, budget)
        if len(chunk) > budget:
            self._held = chunk.slice(budget)
            chunk = chunk.slice(0, budget)
        return chunk

    def close(self) -> None:
        # The read in flight uses the connection: it ends before the connection closes.
        if self._ahead is not None:
            with contextlib.suppress(Exception):
                self._ahead.result()
            self._ahead = None
        self._chunks.close()


class RowSource(Protocol):
    """The three queries a stored series' export makes, against one database library."""

    def series_id(self, exchange: str, symbol: str, interval: str) -> int | None:
        """None if the series (or the schema) does not exist."""
        ...

    def newest_start(self, series: int, end: int, count: int) -> int | None:
        """The open time of the ``count``-th newest row at or before ``end`` (None: fewer)."""
        ...

    def columns(self, series: int, lo: int, hi: int, limit: int) -> pa.Table:
        """``STORED_SQL``'s rows as int64 columns named ``STORED_COLUMNS``."""
        ...

    def close(self) -> None: ...


class StoredChunks:
    """A stored series read by keyset pages (``open_time`` after the last one read): one
    statement a chunk, so no read transaction stays open between chunks (it would hold back
    WAL checkpoints)."""

    def __init__(self, source: RowSource, request: ExportRequest) -> None:
        self.request = request
        self._source = source
        self._series: int | None = None
        self._located = False
        self._cursor = MIN_T if request.since is None else request.since
        self._end = MAX_T if request.until is None else request.until

    def read(self, budget: int) -> Chunk | None:
        r = self.request
        if not self._located:
            self._located = True
            self._series = self._source.series_id(r.exchange, r.symbol, r.interval)
            if self._series is not None and r.since is None and r.limit:
                newest = self._source.newest_start(self._series, self._end, r.limit)
                self._cursor = MIN_T if newest is None else newest
        if self._series is None or self._cursor > self._end:
            return None
        table = self._source.columns(self._series, self._cursor, self._end, budget)
        if not table.num_rows:
            return None
        self._cursor = table.column(0)[-1].as_py() + 1
        return stored_chunk(table)

    def close(self) -> None:
        self._source.close()


class Sqlite3Rows:
    """``RowSource`` through Python's sqlite3: a tuple per row, then a column at a time. The
    export worker reads through ADBC instead (``feedd.store.exportworker``), ~3x faster, but
    in a process of its own: two SQLite libraries in one process break each other's POSIX
    locks and WAL index (SIGBUS under load; sqlite.org/howtocorrupt.html, 2.2.1)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def series_id(self, exchange: str, symbol: str, interval: str) -> int | None:
        try:
            row = self._conn.execute(SERIES_SQL, (exchange, symbol, interval)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # the writer has not created the schema yet: nothing stored
            raise
        return None if row is None else int(row[0])

    def newest_start(self, series: int, end: int, count: int) -> int | None:
        row = self._conn.execute(NEWEST_SQL, (series, end, count - 1)).fetchone()
        return None if row is None else int(row[0])

    def columns(self, series: int, lo: int, hi: int, limit: int) -> pa.Table:
        found = self._conn.execute(STORED_SQL, (series, lo, hi, limit)).fetchall()
        if not found:
            return pa.table({name: pa.array([], pa.int64()) for name in STORED_COLUMNS})
        columns = zip(*found, strict=True)
        return pa.table(
            {
                name: pa.array(column, pa.int64())
                for name, column in zip(STORED_COLUMNS, columns, strict=True)
            }
        )

    def close(self) -> None:
        self._conn.close()


class ResampledChunks:
    """Larger candles built from stored 1m ones by ``feedd.store.resample`` (sqlite3 only)."""

    def __init__(self, conn: sqlite3.Connection, request: ExportRequest) -> None:
        self.request = request
        self._conn = conn
        self._located = False
        self._cursor = MIN_T if request.since is None else request.since

    def read(self, budget: int) -> Chunk | None:
        r = self.request
        end = MAX_T if r.until is None else rs.end_after_bucket_of(r.interval, r.until)
        if not self._located:
            self._located = True
            if r.since is None and r.limit:
                newest = self._query(MIN_T, end, newest=True, limit=r.limit)
                self._cursor = newest[0][0] if newest else MAX_T
        start = rs.first_bucket_at_or_after(r.interval, self._cursor)
        if start >= end:
            return None
        found = self._query(start, end, newest=False, limit=budget)
        if not found:
            return None
        self._cursor = next_open(r.interval, found[-1][0])
        return resampled_chunk(found)

    def _query(self, start: int, end: int, *, newest: bool, limit: int) -> list[rs.Resampled]:
        r = self.request
        try:
            return rs.query(
                self._conn, r.exchange, r.symbol, r.interval, start, end, newest=newest, limit=limit
            )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the writer has not created the schema yet: nothing stored
            raise

    def close(self) -> None:
        self._conn.close()


def sqlite3_export(conn: sqlite3.Connection, request: ExportRequest) -> Export:
    """An export read through sqlite3 on ``conn`` (which it closes)."""
    if request.resampled:
        return Export(request, ResampledChunks(conn, request))
    return Export(request, StoredChunks(Sqlite3Rows(conn), request))
