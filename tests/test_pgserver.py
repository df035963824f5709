"""The test PostgreSQL server itself (tests/pgserver.py): it runs, takes a DSN with a password,
refuses a wrong one, keeps its data across stop/start and can cut feedd's connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]


def test_dsn_with_password_connects(pg_server: PgServer, pg_dsn: str) -> None:
    assert pg_server.password in pg_dsn and "127.0.0.1" in pg_dsn
    with psycopg.connect(pg_dsn) as conn:
        user, db, ssl = conn.execute(
            "SELECT current_user, current_database(), inet_server_addr()::text"
        ).fetchone()
    assert user == "feedd"
    assert db == pg_dsn.rsplit("/", 1)[1]
    assert ssl.startswith("127.0.0.1")


def test_wrong_password_is_refused(pg_server: PgServer, pg_dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.dsn(pg_dsn.rsplit("/", 1)[1], password="wrong")).close()


def test_data_survives_stop_start_and_terminate_cuts_connections(
    pg_server: PgServer, pg_dsn: str
) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    pg_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_dsn, connect_timeout=5).close()
    pg_server.start()
    conn = psycopg.connect(pg_dsn, autocommit=True)
    try:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert pg_server.terminate(dbname) == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert pg_server.connections(dbname) == 0
