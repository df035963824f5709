"""The PostgreSQL write side under faults, against a real server: the server stopped for a
while and started again, feedd's backend connection terminated server-side, the database
made anew, a read-only server, collectors migrating at once. The Writer must hold its
candles, retry, and lose nothing; every error is one line without the password."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
import pytest
import trio

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.store.postgres import postgres_backend
from feedd.store.postgres.writer import PgWriteConnection
from feedd.store.writer import Writer, WriterSettings

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

EX = "bybit_futures"
MIN = 60_000
T0 = 1_700_000_040_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
#: bounds for waits on real I/O (a restart takes ~1 s; the machine is shared)
DEADLINE_S = 90


def candle(symbol: str, t: int, close: str, *, closed: bool) -> Candle:
    return Candle(EX, symbol, "1m", t, "1.0", "2.0", "0.5", close, "3", "4", 5, closed, Source.WS)


def db_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def stored(dsn: str) -> dict[tuple[str, int], tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, open_time, close, flags FROM candles"
            " JOIN series ON series.id = candles.series"
        ).fetchall()
    return {(s, t): (format(Decimal(c), "f"), bool(f & 1)) for s, t, c, f in rows}


class Feed:
    """Sends minutes of candles to the writer, remembering what the store must end up with:
    each candle forming twice, then closed, then a late forming frame that must not win."""

    def __init__(self, send: trio.MemorySendChannel[Sequence[Candle]]) -> None:
        self.send = send
        self.truth: dict[tuple[str, int], tuple[str, bool]] = {}
        self.minute = 0
        self.sent = 0

    async def minutes(self, n: int) -> None:
        for _ in range(n):
            t = T0 + self.minute * MIN
            m = self.minute
            self.minute += 1
            for symbol in SYMBOLS:
                await self.send.send([candle(symbol, t, f"{m}.1", closed=False)])
                await self.send.send([candle(symbol, t, f"{m}.2", closed=False)])
                await self.send.send([candle(symbol, t, f"{m}.30", closed=True)])
                await self.send.send([candle(symbol, t, f"{m}.4", closed=False)])
                self.truth[(symbol, t)] = (f"{m}.30", True)
                self.sent += 4


def settings(dsn: str) -> WriterSettings:
    return WriterSettings(
        backend=postgres_backend(dsn),
        batch_interval_ms=20,
        max_records=0,
        retry_initial_s=0.05,
        retry_max_s=0.5,
        final_commit_timeout_s=30,
    )


async def wait_for(writer: Writer, predicate: object) -> None:
    with trio.fail_after(DEADLINE_S):
        await writer.wait_committed(predicate)  # type: ignore[arg-type]


def settled(writer: Writer, feed: Feed) -> bool:
    s = writer.stats
    return s.healthy and s.pending == 0 and s.received == feed.sent


async def test_writer_survives_server_stop_and_start(pg_server: PgServer, pg_dsn: str) -> None:
    writer = Writer(settings(pg_dsn))
    send, recv = trio.open_memory_channel[Sequence[Candle]](1000)
    feed = Feed(send)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await feed.minutes(5)
        await wait_for(writer, lambda: settled(writer, feed))
        await trio.to_thread.run_sync(pg_server.stop)
        await feed.minutes(5)
        await wait_for(writer, lambda: not writer.stats.healthy)
        error = writer.stats.last_error or ""
        assert pg_server.password not in error and "\n" not in error
        assert "cannot write to postgresql://feedd:***@127.0.0.1" in error
        await feed.minutes(5)  # more arrive while the server is down: held
        assert writer.stats.pending > 0
        await trio.to_thread.run_sync(pg_server.start)
        await wait_for(writer, lambda: settled(writer, feed))
        await feed.minutes(2)
        await send.aclose()
    stats = writer.stats
    assert stats.retries >= 1 and stats.dropped == 0 and stats.recreated == 0
    assert stored(pg_dsn) == feed.truth


async def test_writer_survives_terminated_backend(pg_server: PgServer, pg_dsn: str) -> None:
    writer = Writer(settings(pg_dsn))
    send, recv = trio.open_memory_channel[Sequence[Candle]](1000)
    feed = Feed(send)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        for _ in range(3):
            await feed.minutes(3)
            await wait_for(writer, lambda: settled(writer, feed))
            assert await trio.to_thread.run_sync(pg_server.terminate, db_name(pg_dsn)) == 1
            before = writer.stats.retries
            await feed.minutes(3)
            await wait_for(writer, lambda before=before: writer.stats.retries > before)
            assert "ended the connection" in (writer.stats.last_error or "")
            await wait_for(writer, lambda: settled(writer, feed))
        await send.aclose()
    assert writer.stats.dropped == 0 and writer.stats.recreated == 0
    assert stored(pg_dsn) == feed.truth


async def test_database_made_anew_is_a_new_generation(pg_server: PgServer, pg_dsn: str) -> None:
    writer = Writer(settings(pg_dsn))
    send, recv = trio.open_memory_channel[Sequence[Candle]](1000)
    feed = Feed(send)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await feed.minutes(2)
        await wait_for(writer, lambda: settled(writer, feed))
        name = db_name(pg_dsn)
        await trio.to_thread.run_sync(pg_server.drop_database, name)
        await trio.to_thread.run_sync(pg_server.admin, f"CREATE DATABASE {name} OWNER feedd")
        feed.truth.clear()  # what the old database held is gone
        await feed.minutes(2)
        with trio.fail_after(DEADLINE_S):
            assert await writer.wait_recreated(0) == 1
        await wait_for(writer, lambda: settled(writer, feed))
        await send.aclose()
    assert set(stored(pg_dsn)) >= set(feed.truth)


async def test_server_down_at_start_fails_the_start_in_one_line(
    pg_server: PgServer, pg_dsn: str
) -> None:
    await trio.to_thread.run_sync(pg_server.stop)
    writer = Writer(settings(pg_dsn))
    _, recv = trio.open_memory_channel[Sequence[Candle]](10)
    with pytest.raises(StoreError) as caught:
        await writer.run(recv)
    message = str(caught.value)
    assert "Connection refused" in message and "\n" not in message
    assert pg_server.password not in message and "feedd:***@" in message


def test_wrong_password_and_unknown_database(pg_server: PgServer, pg_dsn: str) -> None:
    wrong = pg_server.dsn(db_name(pg_dsn), password="Wrong-Secret-55")
    with pytest.raises(StoreError, match="password authentication failed") as caught:
        postgres_backend(wrong).open_writer(busy_timeout_ms=1000)
    assert "Wrong-Secret-55" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreError, match="does not exist") as caught:
        postgres_backend(pg_server.dsn("nope")).open_writer(busy_timeout_ms=1000)
    assert pg_server.password not in str(caught.value)


@pytest.mark.parametrize("dsn", ["", "   ", "postgresql://u:Secret-X1@h:notaport/db", "x=1 y"])
def test_prepare_refuses_a_malformed_dsn(dsn: str) -> None:
    with pytest.raises(StoreError) as caught:
        postgres_backend(dsn).prepare()
    assert "Secret-X1" not in str(caught.value) and "\n" not in str(caught.value)


def test_read_only_server_opens_unwritable(pg_server: PgServer, pg_dsn: str) -> None:
    backend = postgres_backend(pg_dsn)
    first = backend.open_writer(busy_timeout_ms=1000)
    first.write([candle("BTCUSDT", T0, "1", closed=True)])
    pg_server.admin(f"ALTER DATABASE {db_name(pg_dsn)} SET default_transaction_read_only = on")
    try:
        again = backend.open_writer(busy_timeout_ms=1000)
        assert not again.writable and again.identity == first.identity
        assert "read" in again.read_only_reason
        again.close()
        # the connection opened before: its writes fail with a clear one-line reason
        pg_server.terminate(db_name(pg_dsn))
        with pytest.raises(StoreError):
            first.write([candle("BTCUSDT", T0 + MIN, "2", closed=True)])
        first.close()
        # a new session is read-only
        with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO jobs VALUES ('x', 1, '{}')")
    finally:
        pg_server.admin(f"ALTER DATABASE {db_name(pg_dsn)} RESET default_transaction_read_only")


def test_read_only_write_error_names_the_cause(pg_server: PgServer, pg_dsn: str) -> None:
    db = postgres_backend(pg_dsn).open_writer(busy_timeout_ms=1000)
    try:
        # a session turned read-only under the writer (as after a failover to a standby)
        db._conn.execute("SET default_transaction_read_only = on")  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="the server is read-only") as caught:
            db.write([candle("BTCUSDT", T0, "1", closed=True)])
        assert "\n" not in str(caught.value) and pg_server.password not in str(caught.value)
    finally:
        db.close()


def test_collectors_starting_at_once_migrate_once(pg_dsn: str) -> None:
    backend = postgres_backend(pg_dsn)
    start = threading.Barrier(4)
    opened: list[PgWriteConnection] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            start.wait()
            opened.append(backend.open_writer(busy_timeout_ms=1000))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    assert len({db.identity for db in opened}) == 1
    assert sum(db.created for db in opened) == 1
    for db in opened:
        db.close()
    assert backend.size_bytes() is not None and backend.size_bytes() > 0  # type: ignore[operator]


def test_nul_in_a_series_name_is_rejected_not_the_batch(pg_dsn: str) -> None:
    """text cannot hold NUL: such a candle would fail the whole COPY, so it is refused alone."""
    db = postgres_backend(pg_dsn).open_writer(busy_timeout_ms=1000)
    try:
        bad = candle("BAD\x00USDT", T0, "1", closed=True)
        db.write([bad, candle("BTCUSDT", T0, "2", closed=True)])
        assert db.rejected == 1
        assert stored(pg_dsn) == {("BTCUSDT", T0): ("2", True)}
    finally:
        db.close()


def test_wipe_from_another_node_while_writing(pg_dsn: str) -> None:
    """One connection wipes while another writes in a thread: neither deadlocks nor fails,
    and what is left afterwards is consistent (every candle under a series, runs exact)."""
    backend = postgres_backend(pg_dsn)
    writer, wiper = (backend.open_writer(busy_timeout_ms=1000) for _ in range(2))
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for m in range(60):
                writer.write([candle(s, T0 + m * MIN, f"{m}", closed=True) for s in SYMBOLS])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    wipes = 0
    while not done.is_set() or wipes == 0:
        wiper.wipe()
        wipes += 1
    thread.join(timeout=120)
    try:
        assert errors == [] and wipes >= 1
        with psycopg.connect(pg_dsn) as conn:
            orphans = conn.execute(
                "SELECT count(*) FROM candles WHERE series NOT IN (SELECT id FROM series)"
            ).fetchone()
        assert orphans == (0,)
        rows = stored(pg_dsn)
        for symbol in SYMBOLS:
            times = sorted(t for s, t in rows if s == symbol)
            runs = writer.closed_runs(EX, symbol, "1m", 0, 2**62)
            assert sum((b - a) // MIN + 1 for a, b in runs) == len(times)
            assert [t for a, b in runs for t in range(a, b + 1, MIN)] == times
    finally:
        writer.close()
        wiper.close()


def test_rewriting_the_same_candles_leaves_rows_alone(pg_dsn: str) -> None:
    """A second collector storing the candles the first stored makes no new row versions."""

    def versions() -> dict[tuple[str, int], str]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                "SELECT symbol, open_time, candles.xmin::text FROM candles"
                " JOIN series ON series.id = candles.series"
            ).fetchall()
        return {(s, t): x for s, t, x in rows}

    a, b = (postgres_backend(pg_dsn).open_writer(busy_timeout_ms=1000) for _ in range(2))
    try:
        batch = [candle(s, T0 + m * MIN, f"{m}.5", closed=True) for s in SYMBOLS for m in range(5)]
        a.write(batch)
        before = versions()
        assert b.write(batch) == 0
        assert versions() == before
        assert b.write([candle("BTCUSDT", T0, "9.5", closed=True)]) == 1
        after = versions()
        assert after[("BTCUSDT", T0)] != before[("BTCUSDT", T0)]
        assert {k: v for k, v in after.items() if k != ("BTCUSDT", T0)} == {
            k: v for k, v in before.items() if k != ("BTCUSDT", T0)
        }
    finally:
        a.close()
        b.close()
