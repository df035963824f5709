"""A page of candles (``candles_json``): values whose decimal mantissa is 2**53 or more read
as the nearest float on both backends (the same JSON bytes), and PostgreSQL's page read on the
event loop shares the pool with the worker threads: an error, a lost connection, a cancelled
read or a missing schema end as they do there, and the pool stays bounded."""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING

import orjson
import psycopg
import pytest
import trio
import trio.testing

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.intervals import MINUTE_MS
from feedd.store.backend import Backend
from feedd.store.postgres.backend import PostgresBackend
from feedd.store.postgres.reader import PgReader

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["store_backends"]

EX, SYM = "binance_futures", "BTCUSDT"
T0 = 1_714_348_800_000
#: mantissas from 2**53 up: a double of the mantissa divided by 10**d rounds twice and lands
#: 1 ulp off for each of these (found by search); int / int division rounds once
WIDE = (
    "4538580746048198.8",
    "52396941018515242.4",
    "3497839500449651.69",
    "399183817784037.855",
    "66653432721532.755",
    "1798646312.30428349",
    "-4538580746048198.8",
    "150232843.47020000",  # wide too, an exchange's kind of quote volume; no ulp off itself
)
READERS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s"


def candles(values: tuple[str, ...], count: int = 1) -> list[Candle]:
    out = []
    for n in range(count):
        six = [values[(n + k) % len(values)] for k in range(6)]
        out.append(Candle(EX, SYM, "1m", T0 + n * MINUTE_MS, *six, n, True, Source.WS))
    return out


def fill(backend: Backend, rows: list[Candle]) -> None:
    conn = backend.open_writer(busy_timeout_ms=2000)
    try:
        conn.write(rows)
    finally:
        conn.close()


def expected(rows: list[Candle]) -> bytes:
    """The page as orjson writes each value's nearest float (Decimal -> float rounds once)."""
    return orjson.dumps(
        [
            {
                "open_time": c.open_time,
                **{
                    k: float(decimal.Decimal(getattr(c, k)))
                    for k in ("open", "high", "low", "close", "volume", "quote_volume")
                },
                "trades": c.trades,
                "closed": True,
                "source": "ws",
            }
            for c in rows
        ]
    )


async def test_wide_mantissas_read_as_the_nearest_float(backend: Backend) -> None:
    rows = candles(WIDE, count=len(WIDE))
    fill(backend, rows)
    reader = backend.open_reader()
    try:
        page = await reader.candles_json(EX, SYM, "1m")
        assert page.count == len(rows)
        assert page.body == expected(rows)
        listed = await reader.candles(EX, SYM, "1m")
        assert [c.open for c in listed] == [float(decimal.Decimal(v)) for v in WIDE]
    finally:
        reader.close()


def pg_reader(dsn: str) -> PgReader:
    reader = PostgresBackend(dsn).open_reader()
    assert isinstance(reader, PgReader)
    return reader


async def warm(reader: PgReader) -> None:
    assert await trio.to_thread.run_sync(reader.warmed.wait, 30)


async def test_loop_read_pages_and_missing_schema(pg_dsn: str) -> None:
    reader = pg_reader(pg_dsn)
    try:
        await warm(reader)
        assert len(reader._idle) == 1  # so the read below runs on the loop
        page = await reader.candles_json(EX, SYM, "1m")  # no schema yet: an error on the loop
        assert (page.body, page.count) == (b"[]", 0)
        backend = PostgresBackend(pg_dsn)
        backend.prepare()
        rows = candles(("94172.40", "1", "0.00000005", "12.5", "0", "100.00"), count=7)
        fill(backend, rows)
        for since, until, limit, want in (
            (None, None, 1000, rows),
            (None, None, 3, rows[-3:]),
            (T0 + MINUTE_MS, None, 2, rows[1:3]),
            (None, T0 + 4 * MINUTE_MS, 2, rows[3:5]),
            (T0 + 100 * MINUTE_MS, None, 10, []),
        ):
            page = await reader.candles_json(EX, SYM, "1m", since, until, limit)
            assert page.body == expected(want), (since, until, limit)
            assert page.count == len(want)
            if want:
                assert (page.first_open_time, page.last_open_time) == (
                    want[0].open_time,
                    want[-1].open_time,
                )
        assert len(reader._idle) == 1  # one connection served every read
    finally:
        reader.close()


async def test_a_terminated_connection_is_replaced_for_a_loop_read(
    pg_server: PgServer, pg_dsn: str
) -> None:
    backend = PostgresBackend(pg_dsn)
    backend.prepare()
    rows = candles(("1.5", "2"), count=3)
    fill(backend, rows)
    reader = pg_reader(pg_dsn)
    try:
        await warm(reader)
        assert (await reader.candles_json(EX, SYM, "1m")).body == expected(rows)
        assert pg_server.terminate(application="feedd-reader") == 1
        assert (await reader.candles_json(EX, SYM, "1m")).body == expected(rows)
    finally:
        reader.close()


async def test_a_stopped_server_is_a_store_error_then_reads_resume(
    pg_server: PgServer, pg_dsn: str
) -> None:
    backend = PostgresBackend(pg_dsn)
    backend.prepare()
    rows = candles(("1.5", "2"), count=3)
    fill(backend, rows)
    reader = pg_reader(pg_dsn)
    try:
        await warm(reader)
        assert (await reader.candles_json(EX, SYM, "1m")).count == 3
        pg_server.stop()
        try:
            with pytest.raises(StoreError):
                await reader.candles_json(EX, SYM, "1m")
        finally:
            pg_server.start()
        assert (await reader.candles_json(EX, SYM, "1m")).body == expected(rows)
    finally:
        reader.close()


async def test_a_cancelled_loop_read_closes_its_connection(pg_dsn: str) -> None:
    backend = PostgresBackend(pg_dsn)
    backend.prepare()
    rows = candles(("1.5", "2"), count=3)
    fill(backend, rows)
    reader = pg_reader(pg_dsn)
    try:
        await warm(reader)
        # The server holds the page back while the table is locked: the read stays mid-query.
        with psycopg.connect(pg_dsn, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader.candles_json, EX, SYM, "1m")
                    await trio.testing.wait_all_tasks_blocked()
                    assert reader._idle == []  # taken by the read, which waits on its socket
                    scope.cancel()
            assert scope.cancelled_caught
            assert reader._idle == []  # closed mid-query, not pooled for the next read
            blocker.execute("ROLLBACK")
        page = await reader.candles_json(EX, SYM, "1m")  # a new connection, in a worker
        assert page.body == expected(rows)
        assert len(reader._idle) == 1
    finally:
        reader.close()


async def test_concurrent_reads_keep_the_pool_bounded(pg_server: PgServer, pg_dsn: str) -> None:
    backend = PostgresBackend(pg_dsn)
    backend.prepare()
    rows = candles(("1.5", "2", "3.25"), count=50)
    fill(backend, rows)
    dbname = pg_dsn.rsplit("/", 1)[1]
    reader = PostgresBackend(pg_dsn).open_reader()
    assert isinstance(reader, PgReader)
    try:
        await warm(reader)
        bodies = []

        async def read() -> None:
            bodies.append((await reader.candles_json(EX, SYM, "1m")).body)

        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(read)
        assert bodies == [expected(rows)] * 60
        (count,) = pg_server.admin(READERS, (dbname, "feedd-reader"))[0]
        assert 1 <= count <= 4  # the limiter's capacity
        assert len(reader._idle) == count
    finally:
        reader.close()
