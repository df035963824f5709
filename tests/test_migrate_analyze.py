"""``feedd migrate`` leaves the target's planner statistics fresh: a bulk-loaded PostgreSQL
without them planned range reads as a sequential scan and a sort per page until autovacuum
came by. Autovacuum is switched off on the target's tables here, so only the migration can
have analyzed them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
from test_migrate import make_store, migrate, source_candles

from feedd.store.postgres import postgres_backend
from feedd.store.postgres.writer import ANALYZED
from feedd.store.sqlite import SqliteBackend

pytest_plugins = ["pgserver"]


def test_the_postgresql_target_is_analyzed(tmp_path: Path, pg_dsn: str) -> None:
    source = tmp_path / "source.db"
    make_store(source, source_candles())
    # The schema first, so autovacuum can be kept off the tables the copy fills.
    postgres_backend(pg_dsn).open_writer(busy_timeout_ms=5000).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in ANALYZED:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")  # type: ignore[arg-type]
    code, _, err = migrate("--from", f"sqlite:{source}", "--to", pg_dsn)
    assert code == 0, err
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", (list(ANALYZED),)
        ).fetchall()
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'candles'").fetchone()
    tuples = dict(rows)
    # Never analyzed, reltuples is -1; ANALYZE counts the rows.
    assert tuples["candles"] == len(source_candles()), tuples
    assert tuples["series"] == 4 and tuples["jobs"] > 0, tuples
    assert stats is not None and stats[0] > 0
    assert "analyzing" in err


def test_the_sqlite_target_is_analyzed(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    make_store(source, source_candles())
    target = tmp_path / "target.db"
    code, _, err = migrate("--from", f"sqlite:{source}", "--to", f"sqlite:{target}")
    assert code == 0, err
    SqliteBackend(target).check_source()
    with closing(sqlite3.connect(target)) as conn:
        tables = {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1").fetchall()}
    assert "candle_rows" in tables  # the table under the view `candles`
