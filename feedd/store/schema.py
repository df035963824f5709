"""Opening SQLite connections for feedd and creating its schema (idempotent).

Prices and volumes are codec INTEGERs; ``flags`` bit 0 = closed, bit 1 = came from REST, bit 2 =
came from a bulk archive. The view ``ohlcv`` shows them as REAL numbers with their series'
names, for other tools. ``jobs`` holds each backfill job's document (JSON), so a job outlives
a restart or a crash.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from feedd.candle import Source
from feedd.errors import StoreError
from feedd.store import coverage, lease, nodes
from feedd.store.codec import sql_decode

log = logging.getLogger("feedd.store")

SCHEMA_VERSION = 3

FLAG_CLOSED = 1
FLAG_REST = 2
FLAG_ARCHIVE = 4
#: the flag bit of each candle source (WS has none)
SOURCE_FLAGS = {Source.WS: 0, Source.REST: FLAG_REST, Source.ARCHIVE: FLAG_ARCHIVE}

SQLITE_READONLY = 8
#: WAL pages between automatic checkpoints (~40 MB; at 1,000 a row cost 27-32 us of CPU in
#: 100-row commits over 600 series, at 10,000 21-22 us; 2,500-row commits 20-22 -> 15 us)
WAL_AUTOCHECKPOINT_PAGES = 10_000
#: a WAL grown past this (readers held a checkpoint back) is cut back to it after a reset
WAL_SIZE_LIMIT_BYTES = 64 << 20

#: columns of ``candles`` after the key, in the order every statement uses
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "flags")
#: the two journals of live rows (``journal.py``): one takes new rows, the other drains
JOURNALS = ("journal0", "journal1")
#: a journal's ``hide`` when none of its rows has moved out
NO_HIDE = -(2**63)
#: per journal, the open time up to which its rows have moved into ``candle_rows`` (SQL)
HIDDEN_UPTO = {j: f"(SELECT hide{n} FROM journal_state)" for n, j in enumerate(JOURNALS)}
#: the rows of ``candle_rows`` and each journal that readers see (a ``WHERE`` or nothing)
VISIBLE = {"candle_rows": "", **{j: f" WHERE open_time > {h}" for j, h in HIDDEN_UPTO.items()}}


def each_table(select: str) -> str:
    """``select`` over ``candle_rows`` and the journals, their visible rows only, as one
    ``UNION ALL`` (``{table}`` and ``{visible}`` in it: the table, its ``WHERE``)."""
    return " UNION ALL ".join(select.format(table=t, visible=v) for t, v in VISIBLE.items())


_ROW_COLUMNS = """
    series INTEGER NOT NULL,
    open_time INTEGER NOT NULL,
    open INTEGER NOT NULL,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL,
    close INTEGER NOT NULL,
    volume INTEGER NOT NULL,
    quote_volume INTEGER NOT NULL,
    trades INTEGER,
    flags INTEGER NOT NULL,"""
#: a row's columns, key first, as every statement names them
ALL_COLUMNS = ", ".join(("series", "open_time", *VALUE_COLUMNS))


def upsert_rule(table: str) -> str:
    """The ``ON CONFLICT`` clause of an insert into ``table``: a closed row yields only to
    another closed row, so a late forming update (a WS frame racing a REST backfill) never
    reopens a finished candle; anything else takes the newer values."""
    return (
        "ON CONFLICT (series, open_time) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in VALUE_COLUMNS)
        + f" WHERE NOT ({table}.flags & 1) OR (excluded.flags & 1)"
    )


_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    exchange TEXT NOT NULL,
    symbol TEXT NOT NULL,
    interval TEXT NOT NULL,
    UNIQUE (exchange, symbol, interval)
);
CREATE TABLE IF NOT EXISTS candle_rows ({row_columns}
    PRIMARY KEY (series, open_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal0 ({row_columns}
    PRIMARY KEY (open_time, series)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal1 ({row_columns}
    PRIMARY KEY (open_time, series)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    active INTEGER NOT NULL,
    hide0 INTEGER NOT NULL,
    hide1 INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS candles AS {candles_view};
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS ohlcv AS {ohlcv_view};
"""
# ``ohlcv`` joins each table to ``series`` apart: SQLite reads a compound view in a join in
# full, so ``ohlcv`` over the view ``candles`` read every row for one symbol (1.9 -> 54 ms
# for 2,000 rows of 160,000).
_OHLCV_ARM = """SELECT series.exchange, series.symbol, series.interval, candles.open_time,
    strftime('%Y-%m-%dT%H:%M:%SZ', candles.open_time / 1000, 'unixepoch') AS time,
    {open} AS open, {high} AS high, {low} AS low, {close} AS close,
    {volume} AS volume, {quote_volume} AS quote_volume, candles.trades,
    candles.flags & 1 AS closed,
    CASE WHEN candles.flags & 4 THEN 'archive' WHEN candles.flags & 2 THEN 'rest' ELSE 'ws' END
        AS source
FROM {{table}} AS candles JOIN series ON series.id = candles.series{{visible}}""".format(
    **{
        name: sql_decode(f"candles.{name}", portable=True)
        for name in ("open", "high", "low", "close", "volume", "quote_volume")
    }
)
_DDL = _DDL.format(
    row_columns=_ROW_COLUMNS,
    candles_view=each_table(f"SELECT {ALL_COLUMNS} FROM {{table}}{{visible}}"),
    ohlcv_view=each_table(_OHLCV_ARM),
)
#: each series' row count and open time range per table, for ``SqlReader.series``: a GROUP
#: BY over the view ``candles`` sorted every row first (23 -> 55 ms over 160,000 rows)
SERIES_STATS = each_table(
    "SELECT series AS id, count(*) AS n, min(open_time) AS lo, max(open_time) AS hi"
    " FROM {table}{visible} GROUP BY series"
)


def source_name(flags: int) -> str:
    """A stored row's source as the API names it: ``ws``, ``rest`` or ``archive``."""
    return "archive" if flags & FLAG_ARCHIVE else "rest" if flags & FLAG_REST else "ws"


def connect_writer(path: Path, *, busy_timeout_ms: int = 2000) -> sqlite3.Connection:
    """The read-write connection, schema ensured. Caller serialises all use of it.

    ``check_same_thread=False`` because trio's worker threads are pooled: the writer keeps
    the connection behind a CapacityLimiter(1), so only one thread touches it at a time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is one transaction.
    conn = sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch journal_mode to WAL (got {mode})")
        # NORMAL in WAL mode survives process crashes; only power loss may drop the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Each commit rewrites the newest page of every series it touches; checkpointing
        # every 1,000 WAL pages (SQLite's default) copied and fsynced those pages after
        # nearly every commit. At 10,000 the same hot pages are copied once per ~10 commits.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def is_writable(conn: sqlite3.Connection) -> bool:
    """False when SQLite opened the file read-only: it falls back to that silently when the
    file cannot be opened for writing (permissions, ``chattr +i``, a read-only mount), and
    even ``BEGIN IMMEDIATE`` succeeds then in WAL mode. A rolled-back no-op UPDATE asks for
    the write lock without writing anything."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_READONLY:
            return False
        raise
    finally:
        conn.execute("ROLLBACK")
    return True


def connect_reader(path: Path, *, busy_timeout_ms: int = 2000) -> sqlite3.Connection:
    """A read-only connection; raises sqlite3.OperationalError if the file does not exist."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    # Autocommit: a pooled connection must never sit on an open read transaction, which would
    # pin an old snapshot and stop WAL checkpoints.
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Resampling fills a small temp table per query; keep it off the disk.
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        view = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'ohlcv'").fetchone()
        if view is not None and "'archive'" not in view[0]:
            conn.execute("DROP VIEW ohlcv")  # from before archive candles: made anew below
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'candles'").fetchone()
        if kind is not None and kind[0] == "table":
            # Before schema 3 the rows were all in the table ``candles``; it becomes
            # ``candle_rows`` and ``candles`` the view over it and the journals. The rename
            # would point ``ohlcv`` at the table: it is made anew over the view.
            conn.execute("DROP VIEW IF EXISTS ohlcv")
            conn.execute("ALTER TABLE candles RENAME TO candle_rows")
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        if conn.execute("SELECT 1 FROM journal_state").fetchone() is None:
            # Not INSERT OR IGNORE each time: that writes, and a read-only file must open.
            conn.execute(
                "INSERT INTO journal_state (id, active, hide0, hide1) VALUES (0, 0, ?1, ?1)",
                (NO_HIDE,),
            )
        conn.execute(coverage.DDL)
        conn.execute(nodes.DDL)  # added without a version bump: older feedd ignore it
        conn.execute(lease.DDL)  # the same
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        elif row[0] in (1, 2):
            if row[0] == 1:
                # Version 2 keeps the runs of closed candles (coverage): built once from them.
                read = coverage.rebuild(conn)
                log.info("database upgraded to schema 2: coverage built from %d candles", read)
            # Version 3 adds the journals of live rows (renamed above); nothing to fill.
            log.info("database upgraded to schema 3: journals of live rows")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
            )
        elif row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"database schema version {row[0]} is not the supported {SCHEMA_VERSION}"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_HINTS = {
    5: "database is locked by another writer (busy)",
    6: "database table is locked",
    SQLITE_READONLY: "database is read-only (file or directory permissions, or a read-only mount)",
    10: "disk I/O error",
    11: "database file is corrupt",
    13: "disk is full",
    14: "cannot open the database file (missing directory or permissions)",
    26: "file is not a SQLite database",
}


def store_error(exc: sqlite3.Error, action: str, path: Path) -> StoreError:
    """Translate an sqlite3 exception into a StoreError naming the file and the likely cause."""
    code = getattr(exc, "sqlite_errorcode", None)
    hint = _HINTS.get(code & 0xFF) if isinstance(code, int) else None
    text = f"{hint}: {exc}" if hint else str(exc)
    return StoreError(f"{action} {path}: {text}")
