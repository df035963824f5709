"""Exports read from PostgreSQL a chunk at a time, in the same files SQLite's export makes.

Stored rows come in pages, each a window of open time printed whole by PostgreSQL as one
value (``feedd.store.postgres.exportcopy``): CSV and NDJSON lines passed on as they are, or CSV
that Arrow reads into Parquet's floats. Printing is the cost (~2-4 us a row, ~1 s of server CPU
for a year of 1m CSV), so the next windows are asked for ahead on connections of the export's
own and printed by several backends while feedd ships the page before; memory stays the same
whatever the range. Resampled candles reuse ``feedd.store.export``'s path, keyset paged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import pq

from feedd.intervals import INTERVAL_MS, MINUTE_MS, next_open
from feedd.store import resample as rs
from feedd.store.export import (
    COLUMNS,
    VALUES,
    Chunk,
    _ParquetSink,
    csv_bytes,
    ndjson_bytes,
    parquet_table,
    resampled_chunk,
)
from feedd.store.exportrequest import ExportRequest
from feedd.store.postgres import exportcopy
from feedd.store.postgres import resample as pg_rs
from feedd.store.postgres.connection import Connection, open_sibling
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST

#: rows read, encoded and handed on at a time (a Parquet row group each)
CHUNK_ROWS = 50_000
#: pages asked for ahead, each on a connection of the export's own
CONNECTIONS = 3
_MIN_T, _MAX_T = -(2**63), 2**63 - 1


class PgExport:
    """One export: call ``next_chunk`` with a connection (in a worker thread) until it
    returns None, and ``close`` if it is left before. Any pooled connection will do for the
    next chunk; the pages asked for ahead wait on connections of the export's own."""

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
        self._pages: _Pages | None = None

    def close(self) -> None:
        """Let go of the export's own connections (an export left before its end)."""
        if self._pages is not None:
            self._pages.close()

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
        # An NDJSON line is ~2.2 times a CSV one: a quarter of the rows keep a page near 2.2 MB.
        # A page is held three times in feedd for a moment (libpq's buffer, its result, the
        # bytes), and each connection of the export keeps a buffer of its largest: with half
        # the rows (4.5 MB) and 3 connections feedd grew by up to 43 MB during a download.
        page_rows = CHUNK_ROWS // 4 if self.request.format == "ndjson" else CHUNK_ROWS
        budget = page_rows
        if self.request.limit is not None:
            budget = min(budget, self.request.limit - self.rows)
        body = (
            self._body(conn, budget, page_rows) if budget > 0 and self._series is not None else None
        )
        if body is None:
            self._done = True
            return head + (self._parquet.finish() if self._parquet is not None else b"")
        return head + body

    def _body(self, conn: Connection, budget: int, page_rows: int) -> bytes | None:
        """The encoded rows of the next page, None after the last."""
        if not self.request.resampled:
            return self._stored(conn, page_rows)
        chunk = self._resampled(conn, budget)
        if chunk is None:
            return None
        if self._parquet is not None:
            return self._parquet.write(parquet_table(chunk))
        return csv_bytes(chunk) if self.request.format == "csv" else ndjson_bytes(chunk)

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

    def _resampled(self, conn: Connection, budget: int) -> Chunk | None:
        r = self.request
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

    def _stored(self, conn: Connection, budget: int) -> bytes | None:
        if self._pages is None:
            self._pages = _Pages(
                conn, self._series or 0, self._cursor, self._end, self.request, budget
            )
        page = self._pages.next(conn)
        if page is None:
            return None
        text, count = page
        self.rows += count
        if self._parquet is None or not count:
            return text
        table = exportcopy.float_table(text)
        return self._parquet.write(parquet_table(_float_chunk(table)))


class _Pages:
    """The stored rows of a range as pages printed by the server, several at once.

    The range (from its first row to its last, found first) is cut in windows of open time
    that hold at most a page of rows each (``budget`` intervals wide); up to ``CONNECTIONS``
    windows are asked for ahead on connections of the export's own, so the server prints the
    next pages (in several backends) while feedd ships this one. Pages come back in order.
    A window holding more than ``budget`` rows (open times closer than the interval) is read
    on to its end a page at a time before the next one. Any failure after the first page
    asked for ends the export: a page is never skipped.
    """

    def __init__(
        self, conn: Connection, series: int, lo: int, hi: int, r: ExportRequest, budget: int
    ) -> None:
        # One row over a window's most: a window that reaches it has rows closer than the
        # interval (or a page of them exactly), and the rest of it is read on.
        self._series, self._limit = series, budget + 1
        sql = {"csv": exportcopy.CSV_SQL, "ndjson": exportcopy.NDJSON_SQL}.get(
            r.format, exportcopy.COLUMNS_SQL
        )
        self._sql, self._sent_sql = sql, exportcopy.dollar(sql)
        if r.limit is not None:  # the range ends at the limit's last row
            row = conn.execute(
                "SELECT open_time FROM candles WHERE series = %s AND open_time >= %s"
                " AND open_time <= %s ORDER BY open_time OFFSET %s LIMIT 1",
                (series, lo, hi, max(r.limit - 1, 0)),
            ).fetchone()
            hi = hi if row is None else int(row[0])
        first, last = conn.execute(
            "SELECT min(open_time), max(open_time) FROM candles"
            " WHERE series = %s AND open_time >= %s AND open_time <= %s",
            (series, lo, hi),
        ).fetchone() or (None, None)
        width = budget * INTERVAL_MS.get(r.interval, MINUTE_MS)
        self._windows: Iterator[tuple[int, int]] = (
            iter(()) if first is None or r.limit == 0 else _windows(first, last, width)
        )
        many = first is not None and last - first >= width
        self._links: list[pq.abc.PGconn] = []
        self._asked: deque[tuple[pq.abc.PGconn, int, int]] = deque()
        self._rest: tuple[int, int] | None = None
        self._failed = False
        try:
            for _ in range(CONNECTIONS if many else 0):
                # each asks at once: the server prints while the next one connects
                self._links.append(open_sibling(conn, application_name="feedd-export"))
                self._ask(self._links[-1])
        except BaseException:
            self.close()
            raise

    def next(self, conn: Connection) -> tuple[bytes, int] | None:
        """The next page's bytes and row count (empty for a window without rows), None after
        the last."""
        if self._failed:
            raise psycopg.OperationalError("the export failed before")
        try:
            page = self._next(conn)
        except BaseException:
            self._failed = True
            self.close()
            raise
        if page is None:
            self.close()
        return page

    def _next(self, conn: Connection) -> tuple[bytes, int] | None:
        if self._rest is not None:
            lo, hi = self._rest
            text, count, last = exportcopy.text_page(
                conn, self._sql, self._series, lo, hi, self._limit
            )
        elif self._asked:
            link, lo, hi = self._asked.popleft()
            text, count, last = exportcopy.take_page(link)
            self._ask(link)
        elif (window := next(self._windows, None)) is not None:
            lo, hi = window
            text, count, last = exportcopy.text_page(
                conn, self._sql, self._series, lo, hi, self._limit
            )
        else:
            return None
        self._rest = (last + 1, hi) if count == self._limit and last < hi else None
        return text, count

    def _ask(self, link: pq.abc.PGconn) -> None:
        window = next(self._windows, None)
        if window is not None:
            exportcopy.send_page(link, self._sent_sql, self._series, *window, self._limit)
            self._asked.append((link, *window))

    def close(self) -> None:
        """Close the export's own connections (a query in flight ends with them)."""
        links, self._links = self._links, []
        self._asked.clear()
        for link in links:
            link.finish()


def _windows(first: int, last: int, width: int) -> Iterator[tuple[int, int]]:
    lo = first
    while lo <= last:
        hi = min(lo + width - 1, last)
        yield lo, hi
        lo = hi + 1


def _float_chunk(table: pa.Table) -> Chunk:
    """A chunk of ``exportcopy.FLOAT_SQL``'s columns: the values as floats."""
    columns = {name: table.column(name).combine_chunks() for name in exportcopy.NAMES}
    flags = columns["flags"]
    return Chunk(
        columns["open_time"],
        tuple(columns[v] for v in VALUES),
        columns["trades"],
        pc.not_equal(pc.bit_wise_and(flags, FLAG_CLOSED), 0),
        pc.if_else(
            pc.not_equal(pc.bit_wise_and(flags, FLAG_ARCHIVE), 0),
            "archive",
            pc.if_else(pc.not_equal(pc.bit_wise_and(flags, FLAG_REST), 0), "rest", "ws"),
        ),
        exact=False,
    )
