"""Exports read from PostgreSQL a chunk at a time, in the same files SQLite's export makes.

Each chunk is one keyset page (``open_time`` after the last one sent), so memory stays the same
whatever the range and no cursor is held open between chunks. Stored rows come through
``COPY ... TO STDOUT (FORMAT csv)`` straight into Arrow columns: the values keep the exact
decimal text of ``numeric`` (CSV, NDJSON) or become its nearest float (Parquet); resampled
candles reuse ``feedd.store.export``'s path for computed values.
"""

from __future__ import annotations

import io

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from feedd.intervals import next_open
from feedd.store import resample as rs
from feedd.store.export import (
    COLUMNS,
    Chunk,
    _ParquetSink,
    csv_bytes,
    ndjson_bytes,
    parquet_table,
    resampled_chunk,
)
from feedd.store.exportrequest import ExportRequest
from feedd.store.postgres import resample as pg_rs
from feedd.store.postgres.connection import Connection
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST

#: rows read, encoded and handed on at a time (a Parquet row group each)
CHUNK_ROWS = 50_000
_VALUES = ("open", "high", "low", "close", "volume", "quote_volume")
_MIN_T, _MAX_T = -(2**63), 2**63 - 1
_STORED_SQL = (
    f"COPY (SELECT open_time, {', '.join(f'{v}::text' for v in _VALUES)}, trades, flags"
    " FROM candles WHERE series = {series} AND open_time >= {lo} AND open_time <= {hi}"
    " ORDER BY open_time LIMIT {limit}) TO STDOUT (FORMAT csv)"
)
_NAMES = ("open_time", *_VALUES, "trades", "flags")
_CONVERT = pa_csv.ConvertOptions(
    column_types={
        "open_time": pa.int64(),
        **dict.fromkeys(_VALUES, pa.string()),
        "trades": pa.int64(),
        "flags": pa.int64(),
    },
    strings_can_be_null=False,
)
_READ = pa_csv.ReadOptions(column_names=list(_NAMES), block_size=1 << 24)


class PgExport:
    """One export: call ``next_chunk`` with a connection (in a worker thread) until it
    returns None. Holds no connection itself: any pooled one will do for the next chunk."""

    def __init__(self, request: ExportRequest) -> None:
        self.request = request
        self.rows = 0
        self._series: int | None = None
        self._cursor = _MIN_T if request.since is None else request.since
        self._end = _MAX_T if request.until is None else request.until
        self._located = False
        self._started = False
        self._done = False
        self._parquet = _ParquetSink() if request.format == "parquet" else None

    def next_chunk(self, conn: Connection) -> bytes | None:
        """The next bytes of the file (the header comes with the first), None at the end."""
        if self._done:
            return None
        if not self._located:
            self._locate(conn)
        head = b""
        if not self._started and self.request.format == "csv":
            head = (",".join(COLUMNS) + "\n").encode()
        self._started = True
        budget = CHUNK_ROWS
        if self.request.limit is not None:
            budget = min(budget, self.request.limit - self.rows)
        chunk = self._read(conn, budget) if budget > 0 and self._series is not None else None
        if chunk is None:
            self._done = True
            return head + (self._parquet.finish() if self._parquet is not None else b"")
        if self._parquet is not None:
            return head + self._parquet.write(parquet_table(chunk))
        return head + (csv_bytes(chunk) if self.request.format == "csv" else ndjson_bytes(chunk))

    def _locate(self, conn: Connection) -> None:
        r = self.request
        interval = rs.BASE_INTERVAL if r.resampled else r.interval
        try:
            self._series = pg_rs.series_id(conn, r.exchange, r.symbol, interval)
        except psycopg.errors.UndefinedTable:
            self._series = None  # the schema does not exist yet: nothing stored
        if self._series is not None and r.since is None and r.limit:
            self._cursor = self._start_of_newest(conn, r.limit)
        self._located = True

    def _start_of_newest(self, conn: Connection, count: int) -> int:
        """Where the newest ``count`` rows up to ``until`` begin: a limit without ``since``
        means the newest rows, as on ``/ohlcv``'s JSON."""
        r = self.request
        if r.resampled:
            end = _MAX_T if r.until is None else rs.end_after_bucket_of(r.interval, r.until)
            newest = pg_rs.query(
                conn, r.exchange, r.symbol, r.interval, _MIN_T, end, newest=True, limit=count
            )
            return newest[0][0] if newest else _MAX_T
        row = conn.execute(
            "SELECT open_time FROM candles WHERE series = %s AND open_time <= %s"
            " ORDER BY open_time DESC LIMIT 1 OFFSET %s",
            (self._series, self._end, count - 1),
        ).fetchone()
        return _MIN_T if row is None else int(row[0])

    def _read(self, conn: Connection, budget: int) -> Chunk | None:
        r = self.request
        if r.resampled:
            start = rs.first_bucket_at_or_after(r.interval, self._cursor)
            end = _MAX_T if r.until is None else rs.end_after_bucket_of(r.interval, r.until)
            found = pg_rs.query(
                conn, r.exchange, r.symbol, r.interval, start, end, newest=False, limit=budget
            )
            if not found:
                return None
            self._cursor = next_open(r.interval, found[-1][0])
            self.rows += len(found)
            return resampled_chunk(found)
        if self._cursor > self._end:
            return None
        table = _copy_table(conn, self._series or 0, self._cursor, self._end, budget)
        if not table.num_rows:
            return None
        self._cursor = table.column("open_time")[-1].as_py() + 1
        self.rows += table.num_rows
        return _stored_chunk(table, floats=self._parquet is not None)


def _copy_table(conn: Connection, series: int, lo: int, hi: int, limit: int) -> pa.Table:
    # COPY takes no bound parameters; every one of these is an int formatted here.
    sql = _STORED_SQL.format(series=int(series), lo=int(lo), hi=int(hi), limit=int(limit))
    data = bytearray()
    with conn.cursor() as cursor, cursor.copy(sql) as copy:
        for block in copy:
            data += block
    if not data:
        return pa.table({name: pa.array([], pa.int64()) for name in _NAMES})
    return pa_csv.read_csv(io.BytesIO(data), read_options=_READ, convert_options=_CONVERT)


def _stored_chunk(table: pa.Table, *, floats: bool) -> Chunk:
    """A chunk whose values are ``numeric``'s exact text, which the text formats pass on
    as they are, or (``floats``, for Parquet) the nearest float of each."""
    columns = {name: table.column(name).combine_chunks() for name in _NAMES}
    flags = columns["flags"]
    values = tuple(pc.cast(columns[v], pa.float64()) if floats else columns[v] for v in _VALUES)
    return Chunk(
        columns["open_time"],
        values,
        columns["trades"],
        pc.not_equal(pc.bit_wise_and(flags, FLAG_CLOSED), 0),
        pc.if_else(
            pc.not_equal(pc.bit_wise_and(flags, FLAG_ARCHIVE), 0),
            "archive",
            pc.if_else(pc.not_equal(pc.bit_wise_and(flags, FLAG_REST), 0), "rest", "ws"),
        ),
        exact=False,
    )
