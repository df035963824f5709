"""Stored candles for exports: each page printed whole by PostgreSQL as one text value, the
CSV or NDJSON lines of the file, or CSV columns that Arrow reads for Parquet.

``numeric``'s output is the exact decimal text the venue sent, as SQLite's codec prints it, so
the text formats are built in the server in C and passed on as one value per page: no parsing
and no Python work per row (``COPY ... TO STDOUT`` costs ~1.5 us of feedd's CPU a row: one
message each). Parquet needs floats: Arrow parses the same text straight to the nearest
float64, which costs the server less than ``numeric::float8`` (that goes through text too).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pa_csv

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
