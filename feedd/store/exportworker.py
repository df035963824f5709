"""The export worker process (``python -m feedd.store.exportworker``): reads stored series
through ADBC's SQLite driver straight into Arrow columns and answers each request on its
stdin with the next bytes of that export's file on its stdout (``feedd.store.exportwire``).

A process of its own because ADBC's driver links its own SQLite: two SQLite libraries in one
process break each other's POSIX locks and WAL index (sqlite.org/howtocorrupt.html, 2.2.1),
while two processes with different libraries is ordinary multi-process SQLite. This process
never opens the database through Python's sqlite3.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType


class _Refused(MetaPathFinder):
    """Keeps numpy and pandas out of this process: pyarrow imports numpy when it can, and
    pandas at its first ``pa.array`` of a Python list (~40 MB of the worker's ~150 MB of
    imports); every Arrow call here works without them."""

    NAMES = frozenset({"numpy", "pandas"})

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.NAMES:
            raise ModuleNotFoundError(f"{name} is not loaded in the export worker", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _Refused())
    # Arrow's default pool (mimalloc) kept ~45 MB after a year as CSV for a pool that never
    # held more than 8 MB; malloc's kept ~20 MB, at no cost in speed measured. Read by pyarrow
    # at its first allocation, so set before it is imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import argparse  # noqa: E402
import logging  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import BinaryIO  # noqa: E402

import adbc_driver_manager as adbc  # noqa: E402
import adbc_driver_sqlite  # noqa: E402
import pyarrow as pa  # noqa: E402

from feedd.store import exportwire as wire  # noqa: E402
from feedd.store.export import Export  # noqa: E402
from feedd.store.exportchunks import (  # noqa: E402
    NEWEST_SQL,
    SERIES_SQL,
    STORED_COLUMNS,
    STORED_SQL,
    ReadAhead,
    StoredChunks,
)

log = logging.getLogger("feedd.exportworker")
#: ADBC's SQLite driver makes a record batch of this many rows (default 1,024): one a chunk
_BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"


class AdbcRows:
    """``RowSource`` through ADBC's own API (not its DB-API layer, which imports
    ``pyarrow.dataset`` and with it pandas: ~55 MB), on a read-only autocommit connection opened
    at the first query: no transaction outlives a statement, so checkpoints never wait for an
    export."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: adbc.AdbcDatabase | None = None
        self._conn: adbc.AdbcConnection | None = None

    def series_id(self, exchange: str, symbol: str, interval: str) -> int | None:
        if not self.path.exists():
            return None  # nothing written yet, as the reader sees it
        try:
            table = self._query(SERIES_SQL, (exchange, symbol, interval))
        except adbc.Error as exc:
            if "no such table" in str(exc):
                return None  # the writer has not created the schema yet: nothing stored
            raise
        return _first(table)

    def newest_start(self, series: int, end: int, count: int) -> int | None:
        return _first(self._query(NEWEST_SQL, (series, end, count - 1)))

    def columns(self, series: int, lo: int, hi: int, limit: int) -> pa.Table:
        table = self._query(STORED_SQL, (series, lo, hi, limit), batch_rows=max(1, limit))
        # The columns are declared INTEGER, so ADBC types them int64 even when all are null.
        return table.rename_columns(list(STORED_COLUMNS))

    def close(self) -> None:
        for handle in (self._conn, self._db):
            if handle is not None:
                handle.close()
        self._conn = self._db = None

    def _connection(self) -> adbc.AdbcConnection:
        if self._conn is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = adbc_driver_sqlite.connect(uri)
            self._conn = adbc.AdbcConnection(self._db)  # autocommit: ADBC's default
            self._query("PRAGMA busy_timeout = 2000", ())
        return self._conn

    def _query(
        self, sql: str, params: tuple[object, ...], batch_rows: int | None = None
    ) -> pa.Table:
        statement = adbc.AdbcStatement(self._connection())
        try:
            if batch_rows is not None:
                statement.set_options(**{_BATCH_ROWS_OPTION: str(batch_rows)})
            statement.set_sql_query(sql)
            if params:
                # int64 and string parameters, typed here: inferring them from Python values
                # is pyarrow's path that imports pandas
                statement.bind(
                    pa.record_batch(
                        [_param(value) for value in params],
                        names=[str(i) for i in range(len(params))],
                    )
                )
            stream, _ = statement.execute_query()
            table: pa.Table = pa.RecordBatchReader.from_stream(stream).read_all()
            return table
        finally:
            statement.close()


def _param(value: object) -> pa.Array:
    if isinstance(value, str):
        return pa.array([value], pa.string())
    assert isinstance(value, int)
    return pa.array([value], pa.int64())


def _first(table: pa.Table) -> int | None:
    """The first column of the first row as an int (None: no rows)."""
    return int(table.column(0)[0].as_py()) if table.num_rows else None


class Worker:
    """The exports in progress, each answered one chunk per request, in the order asked."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        #: one thread reads ahead for every export (SQLite's work is one core's anyway)
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
        #: each export with the file it reads
        self._jobs: dict[int, tuple[Export, str]] = {}

    def handle(self, order: wire.Order) -> None:
        if order.op == wire.CLOSE:
            self._drop(order.id)
            return
        if order.op == wire.OPEN:
            assert order.path is not None and order.request is not None
            request = order.request
            self._drop(order.id)
            chunks = ReadAhead(StoredChunks(AdbcRows(Path(order.path)), request), self._reads)
            self._jobs[order.id] = (Export(request, chunks), order.path)
        if order.id not in self._jobs:
            self._send(order.id, wire.FAIL, b"no such export")
            return
        job, path = self._jobs[order.id]
        try:
            data = job.next_chunk()
        except adbc.Error as exc:
            self._drop(order.id)
            self._send(order.id, wire.FAIL, f"cannot read {path}: {exc}".encode())
            return
        except Exception as exc:  # a bug: this export fails, the others go on
            log.exception("export %d failed", order.id)
            self._drop(order.id)
            self._send(order.id, wire.FAIL, f"export failed: {exc!r}".encode())
            return
        if data is None:
            self._drop(order.id)
            self._send(order.id, wire.END, b"")
        else:
            self._send(order.id, wire.DATA, data)

    @property
    def idle(self) -> bool:
        return not self._jobs

    def close(self) -> None:
        for ident in list(self._jobs):
            self._drop(ident)
        self._reads.shutdown()

    def _drop(self, ident: int) -> None:
        job = self._jobs.pop(ident, None)
        if job is not None:
            job[0].close()

    def _send(self, ident: int, kind: bytes, payload: bytes) -> None:
        self._out.write(wire.header(ident, kind, len(payload)))
        self._out.write(payload)
        self._out.flush()


def serve(worker: Worker, orders: int, idle_exit_s: float | None) -> None:
    """Handle each order line read from the file descriptor ``orders`` until it closes, or
    until ``idle_exit_s`` pass with no export in progress and no order (memory back: feedd
    starts another worker at its next export)."""
    buffered = bytearray()
    while True:
        cut = buffered.find(b"\n")
        if cut >= 0:
            line = bytes(buffered[:cut])
            del buffered[: cut + 1]
            worker.handle(wire.decode_order(line))
            continue
        timeout = idle_exit_s if worker.idle else None
        ready, _, _ = select.select([orders], [], [], timeout)
        if not ready:
            return
        data = os.read(orders, 1 << 16)
        if not data:
            return
        buffered += data


def _refuse_python_sqlite() -> None:
    """Python's sqlite3 is imported here (shared modules of the thread path name it) but
    must never open a database in this process: it links another SQLite library than ADBC's,
    and two libraries opening one file in one process break each other's POSIX locks
    (sqlite.org/howtocorrupt.html 2.2.1). A connect through it fails loudly instead."""
    import sqlite3

    def refused(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise RuntimeError("the export worker reads SQLite through ADBC only")

    sqlite3.connect = refused  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-exit", type=float, help="seconds idle before exiting")
    args = parser.parse_args()
    # feedd stops this process (closing its stdin, or killing it); a terminal's Ctrl-C is not
    # ours to act on, and a stray print must never land inside a frame.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _refuse_python_sqlite()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=1 << 16)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    worker = Worker(out)
    try:
        serve(worker, sys.stdin.fileno(), args.idle_exit)
    except BrokenPipeError:
        pass  # feedd went away
    finally:
        worker.close()


if __name__ == "__main__":
    main()
