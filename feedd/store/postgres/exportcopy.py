"""Stored candles for exports: each page printed whole by PostgreSQL as one text value, the
CSV or NDJSON lines of the file, or CSV columns that Arrow reads for Parquet.

``numeric``'s output is the exact decimal text the venue sent, as SQLite's codec prints it, so
the text formats are built in the server in C and passed on as one value per page: no parsing
and no Python work per row (``COPY ... TO STDOUT`` costs ~1.5 us of feedd's CPU a row: one
message each). Parquet needs floats: Arrow parses the same text straight to the nearest
float64, which costs the server less than ``numeric::float8`` (that goes through text too).
A page is asked for with ``text_page`` (waiting), or ``send_page`` and later ``take_page`` on
a raw libpq connection, so that it is printed while feedd does something else.
"""

from __future__ import annotations

import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import pq

from feedd.store.export import VALUES
from feedd.store.postgres.connection import Connection

_PAGE = (
    "SELECT * FROM candles WHERE series = %s AND open_time >= %s AND open_time <= %s"
    " ORDER BY open_time LIMIT %s"
)
_CLOSED = "CASE WHEN flags & 1 <> 0 THEN 'true' ELSE 'false' END"
_SOURCE = "CASE WHEN flags & 4 <> 0 THEN 'archive' WHEN flags & 2 <> 0 THEN 'rest' ELSE 'ws' END"
#: ``feedd.store.export.csv_bytes``' line: nothing in it needs quoting; a missing trade count
#: is an empty field
_CSV_LINE = (
    f"concat_ws(',', open_time, {', '.join(VALUES)}, coalesce(trades::text, ''),"
    f" {_CLOSED}, {_SOURCE})"
)
#: ``feedd.store.export.ndjson_bytes``' line
_NDJSON_LINE = (
    "concat('{\"open_time\":', open_time"
    + "".join(f", ',\"{v}\":', {v}" for v in VALUES)
    + ", ',\"trades\":', coalesce(trades::text, 'null')"
    + f", ',\"closed\":', {_CLOSED}, ',\"source\":\"', {_SOURCE}, '\"}}')"
)
#: A page's lines in one value (bytes), with its row count and last open time. The aggregate
#: takes the rows in the order the ordered subquery gives them (PostgreSQL's documented way
#: to order an aggregate's input without sorting again; the LIMIT keeps any parallel plan
#: below it, merged in order).
_TEXT_SQL = (
    "SELECT convert_to(string_agg({line}, E'\\n') || E'\\n', 'UTF8'), count(*), max(open_time)"
    " FROM ({page}) AS p"
)
CSV_SQL = _TEXT_SQL.format(line=_CSV_LINE, page=_PAGE)
NDJSON_SQL = _TEXT_SQL.format(line=_NDJSON_LINE, page=_PAGE)
NAMES = ("open_time", *VALUES, "trades", "flags")
#: For Parquet: numeric's text as CSV, which Arrow parses to the nearest float64
COLUMNS_SQL = _TEXT_SQL.format(
    line=f"concat_ws(',', {', '.join(NAMES[:-2])}, coalesce(trades::text, ''), flags)",
    page=_PAGE,
)
_CONVERT = pa_csv.ConvertOptions(
    column_types={
        "open_time": pa.int64(),
        **dict.fromkeys(VALUES, pa.float64()),
        "trades": pa.int64(),
        "flags": pa.int64(),
    },
)
_READ = pa_csv.ReadOptions(column_names=list(NAMES), block_size=1 << 24)


def text_page(
    conn: Connection, sql: str, series: int, lo: int, hi: int, limit: int
) -> tuple[bytes, int, int]:
    """A page's lines (CSV_SQL or NDJSON_SQL), how many and the last open time; no lines,
    0 rows and -1 when the page is empty."""
    # bytea in binary: the bytes as the server holds them, one copy, nothing decoded
    row = conn.execute(sql, (series, lo, hi, limit), binary=True).fetchone()
    if row is None or not row[1]:
        return b"", 0, -1
    text, count, last = row
    return bytes(text), int(count), int(last)


def float_table(text: bytes) -> pa.Table:
    """The columns of a page of ``COLUMNS_SQL``, the values as floats."""
    return pa_csv.read_csv(io.BytesIO(text), read_options=_READ, convert_options=_CONVERT)


def dollar(sql: str) -> bytes:
    """``sql`` with libpq's numbered placeholders ($1, $2...) for psycopg's ``%s``."""
    parts = sql.split("%s")
    return (parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))).encode()


def send_page(pgconn: pq.abc.PGconn, sql: bytes, series: int, lo: int, hi: int, limit: int) -> None:
    """Ask for a page (``dollar(CSV_SQL)`` and the like) without waiting: the server prints it
    while feedd ships the pages before; ``take_page`` reads it."""
    params = [str(v).encode() for v in (series, lo, hi, limit)]
    pgconn.send_query_params(sql, params, result_format=pq.Format.BINARY)


def take_page(pgconn: pq.abc.PGconn) -> tuple[bytes, int, int]:
    """The page ``send_page`` asked for, as ``text_page`` returns it; the server's error (or
    the lost connection's) as a ``psycopg.Error``, never fewer rows."""
    result = error = None
    while (got := pgconn.get_result()) is not None:  # up to the query's end
        if got.status == pq.ExecStatus.TUPLES_OK:
            result = got
        elif error is None:
            error = got
    if error is not None or result is None:
        raise _error(pgconn, error)
    count = result.get_value(0, 1)
    if not count or not _int8(count):
        return b"", 0, -1
    text, last = result.get_value(0, 0), result.get_value(0, 2)
    assert text is not None and last is not None  # a non-empty page has both
    return bytes(text), _int8(count), _int8(last)


def _int8(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


def _error(pgconn: pq.abc.PGconn, result: pq.abc.PGresult | None) -> psycopg.Error:
    if result is not None and result.error_field(pq.DiagnosticField.SQLSTATE):
        return psycopg.errors.error_from_result(result)
    # no SQLSTATE: the connection broke (libpq's own message says how)
    message = result.get_error_message() if result is not None else ""
    return psycopg.OperationalError(message or pgconn.get_error_message() or "connection lost")
