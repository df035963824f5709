"""A query run on the event loop itself: libpq's non-blocking calls on a pooled psycopg
connection, trio waiting on its socket. For small, frequent reads (a page of candles), where
waking a worker thread and trading the GIL with it cost more than the query's own work.
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
import trio
from psycopg import pq
from psycopg.adapt import Transformer

from feedd.store.postgres.connection import Connection


class NotFetched(Exception):
    """The query gave no rows: an error from the server (``idle``: the connection is ready for
    the next query) or a lost connection. The caller asks again the ordinary way, whose handling
    of each case (a schema not made yet, a reconnect, a clear StoreError) is written once."""

    def __init__(self, *, idle: bool) -> None:
        super().__init__("an error from the server" if idle else "the connection failed")
        self.idle = idle


def libpq_sql(sql: str) -> bytes:
    """psycopg's ``%s`` placeholders as libpq's ``$1``, ``$2``, ..."""
    parts = sql.split("%s")
    return "".join(
        f"{part}${n}" if n < len(parts) else part for n, part in enumerate(parts, 1)
    ).encode()


class Statement:
    """One query prepared on each connection that runs it (by name, the first time): the
    server plans it once per connection, as psycopg does for its own repeated queries."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.sql = libpq_sql(sql)
        self._prepared: weakref.WeakSet[Connection] = weakref.WeakSet()

    async def rows(self, conn: Connection, params: tuple[int | str | None, ...]) -> list[Any]:
        """The statement's rows (binary results, loaded by psycopg's own loaders, as tuples).

        ``conn`` must be idle and not used elsewhere meanwhile; psycopg keeps every connection
        in libpq's non-blocking mode, so nothing here waits but on trio. Cancelled or failed
        midway, the connection is left mid-query: the caller closes it.
        """
        try:
            return await self._rows(conn, params)
        except psycopg.Error:  # libpq could not send or read: the connection is lost
            raise NotFetched(idle=False) from None

    async def _rows(self, conn: Connection, params: tuple[int | str | None, ...]) -> list[Any]:
        pgconn = conn.pgconn
        if conn not in self._prepared:
            pgconn.send_prepare(self.name, self.sql)
            await _result(pgconn, pq.ExecStatus.COMMAND_OK)
            self._prepared.add(conn)
        values = [None if v is None else str(v).encode() for v in params]
        pgconn.send_query_prepared(self.name, values, result_format=pq.Format.BINARY)
        result = await _result(pgconn, pq.ExecStatus.TUPLES_OK)
        loader = Transformer.from_context(conn)
        loader.set_pgresult(result)
        return loader.load_rows(0, result.ntuples, tuple)


async def _result(pgconn: pq.abc.PGconn, status: pq.ExecStatus) -> pq.abc.PGresult:
    """The sent query's result, all of it read; NotFetched if it is not ``status``."""
    while pgconn.flush():  # a few hundred bytes: sent at once, unless the socket is full
        await trio.lowlevel.wait_writable(pgconn.socket)
    result = None
    while True:
        while pgconn.is_busy():
            await trio.lowlevel.wait_readable(pgconn.socket)
            pgconn.consume_input()
        res = pgconn.get_result()
        if res is None:
            break
        result = res if result is None else result
    if result is None or result.status != status:
        raise NotFetched(idle=pgconn.status == pq.ConnStatus.OK)
    return result
