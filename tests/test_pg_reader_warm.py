"""The PostgreSQL reader opens its first connection when made, not on the first request; a
server away then is no error at start, only for the reads made while it is away."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
import trio

from feedd.errors import StoreUnavailable
from feedd.store.postgres.backend import PostgresBackend
from feedd.store.postgres.reader import PgReader

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

READERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'feedd-reader'"
)


async def test_first_connection_is_open_before_the_first_read(
    pg_server: PgServer, pg_dsn: str
) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    reader = PostgresBackend(pg_dsn).open_reader()
    assert isinstance(reader, PgReader)
    try:
        assert await trio.to_thread.run_sync(reader.warmed.wait, 30)
        before = pg_server.admin(READERS, (dbname,))
        assert len(before) == 1  # connected without being asked anything
        page = await reader.candles_json("binance_futures", "BTCUSDT", "1m")
        assert page.count == 0  # no schema yet: reads as empty
        assert pg_server.admin(READERS, (dbname,)) == before  # the read used that connection
    finally:
        reader.close()
    assert pg_server.admin(READERS, (dbname,)) == []


async def test_server_away_at_start_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    dsn = f"postgresql://feedd:secret-pw@127.0.0.1:{port}/nothing"
    reader = PostgresBackend(dsn).open_reader()  # no error: the connect is in the background
    assert isinstance(reader, PgReader)
    try:
        assert await trio.to_thread.run_sync(reader.warmed.wait, 30)
        with pytest.raises(StoreUnavailable) as caught:
            await reader.candles_json("binance_futures", "BTCUSDT", "1m")
        assert "secret-pw" not in str(caught.value)
    finally:
        reader.close()
