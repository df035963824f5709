"""Any range of a series as CSV, NDJSON or Parquet, read and encoded a chunk at a time.

An ``Export`` lives in worker threads (one call per chunk), so memory stays the same whatever
the range. A chunk goes from SQLite to Arrow columns once (a tuple per row from sqlite3, then
a column at a time), and every format is built from those columns by Arrow's C++: compute
kernels, its CSV writer, its Parquet writer. Stored candles leave with the exact decimal text
the venue sent (CSV, NDJSON) or the nearest float (Parquet, like the JSON of ``/ohlcv``);
resampled candles are computed and leave as the nearest float.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from feedd.intervals import next_open
from feedd.store import resample as rs
from feedd.store.exportrequest import ExportRequest
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST

#: rows read, encoded and handed on at a time (a Parquet row group each). Arrow's memory pool
#: keeps what a chunk needed: 50,000 rows grew a fresh process by 60-75 MB in an export,
#: 20,000 rows by 35-42 MB (the target is under 50), at no cost in speed measured.
CHUNK_ROWS = 20_000
VALUES = ("open", "high", "low", "close", "volume", "quote_volume")
COLUMNS = ("open_time", *VALUES, "trades", "closed", "source")
PARQUET_SCHEMA = pa.schema(
    [
        ("open_time", pa.int64()),
        *((name, pa.float64()) for name in VALUES),
        ("trades", pa.int64()),
        ("closed", pa.bool_()),
        ("source", pa.string()),
    ],
    metadata={"open_time": "milliseconds since the epoch, UTC"},
)
_STORED_SQL = (
    f"SELECT open_time, {', '.join(VALUES)}, trades, flags FROM candles"
    " WHERE series = ? AND open_time >= ? AND open_time <= ? ORDER BY open_time LIMIT ?"
)
_STORED_COLUMNS = ("open_time", *VALUES, "trades", "flags")
#: Dictionaries only where values repeat: tried on the six floats they cost ~0.4 s a year and
#: made the file larger (21.6 MB against 14.6 MB); deltas suit the evenly spaced open times.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": ["source"],
    "column_encoding": {"open_time": "DELTA_BINARY_PACKED"},
}
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="none")
_MIN_T, _MAX_T = -(2**63), 2**63 - 1
_POW10_INT = pa.array([10**d for d in range(16)], pa.int64())
_POW10_FLOAT = pa.array([float(10**d) for d in range(16)], pa.float64())


@attrs.frozen
class Chunk:
    """Columns of up to CHUNK_ROWS candles: open_time, trades (int64), the six values as
    either exact codec integers or floats, closed and source."""

    open_time: pa.Array
    values: tuple[pa.Array, ...]
    trades: pa.Array
    closed: pa.Array
    #: strings: ws, rest or archive
    source: pa.Array
    exact: bool


def decimal_text(codes: pa.Array) -> pa.Array:
    """The exact decimal text of codec integers (``mantissa * 16 + decimals``), as
    ``codec.decode_str`` gives it, for a whole column at once."""
    mantissa = pc.shift_right(codes, 4)
    decimals = pc.bit_wise_and(codes, 15)
    fewest, most = (s.as_py() for s in pc.min_max(decimals).values())
    if fewest is not None and fewest == most:
        # One scale for the whole column (the usual case: a venue sends a symbol's prices
        # with fixed decimals): the mantissas, read as Arrow decimals of that scale, print
        # themselves, ~3x faster than the digit arithmetic below. Arrow writes a value
        # whose exponent is below -6 as "5E-8": such a column takes the long way.
        unscaled = pc.cast(mantissa, pa.decimal128(38, 0))
        scaled = pa.Array.from_buffers(
            pa.decimal128(38, fewest), len(unscaled), unscaled.buffers(), offset=unscaled.offset
        )
        text = pc.cast(scaled, pa.string())
        if fewest <= 6 or not pc.any(pc.match_substring(text, "E")).as_py():
            return text
    power = pc.take(_POW10_INT, decimals)
    digits = pc.abs(mantissa)
    whole = pc.divide(digits, power)  # integer division: the digits before the dot
    fraction = pc.subtract(digits, pc.multiply(whole, power))
    # power + fraction has one digit more than the fraction: its tail is the zero-padded part
    padded = pc.utf8_slice_codeunits(pc.cast(pc.add(power, fraction), pa.string()), 1)
    text = pc.if_else(
        pc.equal(decimals, 0),
        pc.cast(whole, pa.string()),
        pc.binary_join_element_wise(pc.cast(whole, pa.string()), padded, "."),
    )
    return pc.if_else(pc.less(codes, 0), pc.binary_join_element_wise("-", text, ""), text)


def decoded(codes: pa.Array) -> pa.Array:
    """Codec integers as the nearest floats (exact mantissa / exact power of ten)."""
    mantissa = pc.cast(pc.shift_right(codes, 4), pa.float64())
    return pc.divide(mantissa, pc.take(_POW10_FLOAT, pc.bit_wise_and(codes, 15)))


def stored_chunk(table: pa.Table) -> Chunk:
    """A chunk of the columns ``_STORED_SQL`` selects (all int64)."""
    columns = [column.combine_chunks() for column in table.columns]
    flags = columns[8]
    return Chunk(
        columns[0],
        tuple(columns[1:7]),
        columns[7],
        pc.not_equal(pc.bit_wise_and(flags, FLAG_CLOSED), 0),
        pc.if_else(
            pc.not_equal(pc.bit_wise_and(flags, FLAG_ARCHIVE), 0),
            "archive",
            pc.if_else(pc.not_equal(pc.bit_wise_and(flags, FLAG_REST), 0), "rest", "ws"),
        ),
        exact=True,
    )


def resampled_chunk(rows: list[rs.Resampled]) -> Chunk:
    columns = list(zip(*rows, strict=True))
    return Chunk(
        pa.array(columns[0], pa.int64()),
        tuple(pa.array(c, pa.float64()) for c in columns[1:7]),
        pa.array(columns[7], pa.int64()),
        pa.array(columns[8], pa.bool_()),
        pa.array(columns[9], pa.string()),
        exact=False,
    )


def _texts(chunk: Chunk, null_trades: str) -> list[pa.Array]:
    values = [decimal_text(v) if chunk.exact else pc.cast(v, pa.string()) for v in chunk.values]
    return [
        pc.cast(chunk.open_time, pa.string()),
        *values,
        pc.fill_null(pc.cast(chunk.trades, pa.string()), null_trades),
        pc.if_else(chunk.closed, "true", "false"),
        chunk.source,
    ]


def _joined(lines: pa.Array) -> bytes:
    """The concatenated text of a string column: its data buffer between the first and last
    offsets, without a Python object per line."""
    _, offsets_buffer, data = lines.buffers()
    if data is None or not len(lines):
        return b""
    offsets = pa.Array.from_buffers(
        pa.int32(), len(lines) + 1, [None, offsets_buffer], offset=lines.offset
    )
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    joined: bytes = data.slice(start, end - start).to_pybytes()
    return joined


def csv_bytes(chunk: Chunk) -> bytes:
    # Every text is digits, a dot, a sign, true/false or a source name: nothing to quote.
    table = pa.Table.from_arrays(_texts(chunk, ""), names=list(COLUMNS))
    out = pa.BufferOutputStream()
    pa_csv.write_csv(table, out, _CSV_OPTIONS)
    data: bytes = out.getvalue().to_pybytes()
    return data


def ndjson_bytes(chunk: Chunk) -> bytes:
    parts: list[Any] = []
    for name, text in zip(COLUMNS, _texts(chunk, "null"), strict=True):
        quote = '"' if name == "source" else ""
        parts += [f',"{name}":{quote}', text]
    parts[0] = '{"open_time":'
    parts.append('"}\n')
    return _joined(pc.binary_join_element_wise(*parts, ""))


def parquet_table(chunk: Chunk) -> pa.Table:
    values = [decoded(v) if chunk.exact else v for v in chunk.values]
    return pa.Table.from_arrays(
        [chunk.open_time, *values, chunk.trades, chunk.closed, chunk.source], schema=PARQUET_SCHEMA
    )


class Export:
    """One export: call ``next_chunk`` (in a worker thread) until it returns None.

    ``connect`` opens the sqlite3 connection it reads with."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], request: ExportRequest) -> None:
        self.request = request
        self.rows = 0
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._series: int | None = None
        self._cursor = _MIN_T if request.since is None else request.since
        self._end = _MAX_T if request.until is None else request.until
        self._started = False
        self._done = False
        self._parquet = _ParquetSink() if request.format == "parquet" else None

    def next_chunk(self) -> bytes | None:
        """The next bytes of the file (the header comes with the first), None at the end."""
        if self._done:
            return None
        if self._conn is None:
            self._conn = self._connect()
            self._series = self._find_series(self._conn)
            if self._series is not None and self.request.since is None and self.request.limit:
                self._cursor = self._start_of_newest(self._conn, self.request.limit)
        head = b""
        if not self._started and self.request.format == "csv":
            head = (",".join(COLUMNS) + "\n").encode()
        self._started = True
        budget = CHUNK_ROWS
        if self.request.limit is not None:
            budget = min(budget, self.request.limit - self.rows)
        chunk = self._read(self._conn, budget) if budget > 0 and self._series is not None else None
        if chunk is None:
            self._done = True
            return head + (self._parquet.finish() if self._parquet is not None else b"")
        if self._parquet is not None:
            return head + self._parquet.write(parquet_table(chunk))
        return head + (csv_bytes(chunk) if self.request.format == "csv" else ndjson_bytes(chunk))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _find_series(self, conn: sqlite3.Connection) -> int | None:
        r = self.request
        interval = rs.BASE_INTERVAL if r.resampled else r.interval
        try:
            row = conn.execute(
                "SELECT id FROM series WHERE exchange = ? AND symbol = ? AND interval = ?",
                (r.exchange, r.symbol, interval),
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # the writer has not created the schema yet: nothing stored
            raise
        return None if row is None else int(row[0])

    def _start_of_newest(self, conn: sqlite3.Connection, count: int) -> int:
        """Where the newest ``count`` rows up to ``until`` begin: a limit without ``since``
        means the newest rows, as on ``/ohlcv``'s JSON."""
        r = self.request
        if r.resampled:
            end = _MAX_T if r.until is None else rs.end_after_bucket_of(r.interval, r.until)
            newest = rs.query(
                conn, r.exchange, r.symbol, r.interval, _MIN_T, end, newest=True, limit=count
            )
            return newest[0][0] if newest else _MAX_T
        row = conn.execute(
            "SELECT open_time FROM candles WHERE series = ? AND open_time <= ?"
            " ORDER BY open_time DESC LIMIT 1 OFFSET ?",
            (self._series, self._end, count - 1),
        ).fetchone()
        return _MIN_T if row is None else int(row[0])

    def _read(self, conn: sqlite3.Connection, budget: int) -> Chunk | None:
        if self.request.resampled:
            found = self._resampled(conn, budget)
            if not found:
                return None
            self._cursor = next_open(self.request.interval, found[-1][0])
            self.rows += len(found)
            return resampled_chunk(found)
        stored = self._read_columns(conn, budget)
        if not stored.num_rows:
            return None
        self._cursor = stored.column(0)[-1].as_py() + 1
        self.rows += stored.num_rows
        return stored_chunk(stored)

    def _read_columns(self, conn: sqlite3.Connection, budget: int) -> pa.Table:
        """The next ``budget`` stored rows as an Arrow table: one statement each, so no read
        transaction stays open between chunks (it would hold back WAL checkpoints).

        Through Python's sqlite3 only: an Arrow-native driver (ADBC) was 3-5x faster here,
        but it links its own SQLite, and two SQLite libraries in one process break each
        other's POSIX locks and WAL index (SIGBUS under load; sqlite.org/howtocorrupt.html).
        """
        rows = conn.execute(_STORED_SQL, (self._series, self._cursor, self._end, budget))
        found = rows.fetchall()
        if not found:
            return pa.table({name: pa.array([], pa.int64()) for name in _STORED_COLUMNS})
        columns = zip(*found, strict=True)
        return pa.table(
            {
                name: pa.array(column, pa.int64())
                for name, column in zip(_STORED_COLUMNS, columns, strict=True)
            }
        )

    def _resampled(self, conn: sqlite3.Connection, budget: int) -> list[rs.Resampled]:
        r = self.request
        start = rs.first_bucket_at_or_after(r.interval, self._cursor)
        end = _MAX_T if r.until is None else rs.end_after_bucket_of(r.interval, r.until)
        if start >= end:
            return []
        return rs.query(
            conn, r.exchange, r.symbol, r.interval, start, end, newest=False, limit=budget
        )


class _ParquetSink:
    """A Parquet file written a row group at a time; each write returns the bytes it added."""

    def __init__(self) -> None:
        self._spool = _Spool()
        self._writer = pq.ParquetWriter(self._spool, PARQUET_SCHEMA, **_PARQUET_OPTIONS)

    def write(self, table: pa.Table) -> bytes:
        self._writer.write_table(table)
        return self._spool.take()

    def finish(self) -> bytes:
        self._writer.close()
        return self._spool.take()


class _Spool(io.RawIOBase):
    """A write-only file that hands on what was written; its position counts every byte, as
    the Parquet footer's offsets need."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def read_parquet(data: bytes) -> Sequence[dict[str, Any]]:
    """Rows of a Parquet export as dicts (for tests and ``feedd.client``)."""
    rows: Sequence[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows
