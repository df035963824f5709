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

SCHEMA_VERSION = 2

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
CREATE TABLE IF NOT EXISTS candles (
    series INTEGER NOT NULL,
    open_time INTEGER NOT NULL,
    open INTEGER NOT NULL,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL,
    close INTEGER NOT NULL,
    volume INTEGER NOT NULL,
    quote_volume INTEGER NOT NULL,
    trades INTEGER,
    flags INTEGER NOT NULL,
    PRIMARY KEY (series, open_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS ohlcv AS
SELECT series.exchange, series.symbol, series.interval, candles.open_time,
    strftime('%Y-%m-%dT%H:%M:%SZ', candles.open_time / 1000, 'unixepoch') AS time,
    {open} AS open, {high} AS high, {low} AS low, {close} AS close,
    {volume} AS volume, {quote_volume} AS quote_volume, candles.trades,
    candles.flags & 1 AS closed,
    CASE WHEN candles.flags & 4 THEN 'archive' WHEN candles.flags & 2 THEN 'rest' ELSE 'ws' END
        AS source
FROM candles JOIN series ON series.id = candles.series;
""".format(
    **{
        name: sql_decode(f"candles.{name}", portable=True)
        for name in ("open", "high", "low", "close", "volume", "quote_volume")
    }
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
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(coverage.DDL)
        conn.execute(nodes.DDL)  # added without a version bump: older feedd ignore it
        conn.execute(lease.DDL)  # the same
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        elif row[0] == 1:
            # Version 2 keeps the runs of closed candles (coverage): built once from the rows.
            read = coverage.rebuild(conn)
            log.info("database upgraded to schema 2: coverage built from %d candles", read)
            conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
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
