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

import trio

from feedd.errors import StoreError
from feedd.store import nodes as node_rows
from feedd.store import resample as rs
from feedd.store.codec import decode_float, sql_decode
from feedd.store.database import FileIdentity, file_identity
from feedd.store.exportpool import ExportPool
from feedd.store.exportrequest import ExportRequest
from feedd.store.schema import SERIES_STATS, connect_reader, store_error
from feedd.store.sqlreader import (
    FIELDS,
    MAX_T,
    MIN_T,
    SERIES_ID,
    CandleRow,
    JsonPage,
    Row,
    SeriesInfo,
    SqlReader,
)

T = TypeVar("T")
__all__ = ["CandleRow", "JsonPage", "Reader", "SeriesInfo", "database_bytes"]

#: decodes a value in Python: a mantissa beyond 2**53 is no exact double, so SQL's division
#: would round it twice (a float 1 ulp off PostgreSQL's); int / int in Python rounds once.
#: Exchanges do send such values (a quote volume of 150232843.47020000 has a 17-digit mantissa).
_WIDE_DECODE = "feedd_decode_float"
#: the packed values whose mantissa (value >> 4) is within +-2**53; compared as they are, since a
#: shift first measured slower (this check costs ~0.2 ms of a 1,000-row page's ~3.3 ms)
_EXACT = (-(1 << 57), (1 << 57) + 15)


def _decode(column: str) -> str:
    """``column`` as its nearest float: in SQL while the mantissa is exact, else in Python."""
    return (
        f"CASE WHEN {column} BETWEEN {_EXACT[0]} AND {_EXACT[1]} THEN {sql_decode(column)}"
        f" ELSE {_WIDE_DECODE}({column}) END"
    )


_CANDLES_SQL = f"""
SELECT open_time, {", ".join(_decode(c) for c in FIELDS[1:7])}, trades, flags
FROM candles WHERE series = {SERIES_ID} AND open_time >= ? AND open_time <= ?
ORDER BY open_time {{order}} LIMIT ?
"""


class Reader(SqlReader[sqlite3.Connection]):
    """Pooled read-only connections; safe to share between tasks, one query per thread."""

    SERIES_STATS = SERIES_STATS

    def __init__(self, path: Path, *, max_threads: int = 4) -> None:
        self.path = path
        self._limiter = trio.CapacityLimiter(max_threads)
        #: idle connections with the file each has open
        self._idle: list[tuple[sqlite3.Connection, FileIdentity]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._exports = ExportPool(path, self._limiter)

    def _candle_rows(
        self,
        conn: sqlite3.Connection,
        key: tuple[str, str, str],
        since: int | None,
        until: int | None,
        limit: int,
    ) -> list[Row]:
        lo = MIN_T if since is None else since
        hi = MAX_T if until is None else until
        order = "ASC" if since is not None else "DESC"
        rows: list[Row] = conn.execute(
            _CANDLES_SQL.format(order=order), (*key, lo, hi, limit)
        ).fetchall()
        if since is None:
            rows.reverse()
        return rows

    def _resampled(
        self,
        conn: sqlite3.Connection,
        key: tuple[str, str, str],
        start: int,
        end: int,
        *,
        newest: bool,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        return rs.query(conn, *key, start, end, newest=newest, limit=limit)

    def _nodes(self, conn: sqlite3.Connection) -> list[node_rows.NodeRecord]:
        return node_rows.read(conn)

    def export(self, request: ExportRequest) -> AsyncIterator[bytes]:
        """``request``'s file a chunk at a time, memory constant (``feedd.store.exportpool``)."""
        return self._exports.export(request)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        self._exports.close()
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
                conn.create_function(_WIDE_DECODE, 1, decode_float, deterministic=True)
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
