"""Storage faults that used to end silently: a database SQLite opened read-only (never
reopened, shutdown past its deadline) and database files deleted while feedd runs (commits
went on into the unlinked file). Real files throughout.

Read-only is made with ``chattr +i`` on the database (and its WAL if there is one): as root,
permission bits stop nothing, while an immutable file refuses to be opened for writing even
to root, so SQLite falls back to opening it read-only exactly as it does for a feedd user
facing a file it may not write. Not the ``-shm`` file: SQLite maps it, and writing to an
immutable mapping is a SIGBUS (see tests/chaos/test_storage_faults.py). Tests needing chattr
are skipped where it is not permitted.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from chaos.harness import FeeddProcess, config_doc, poll_until, write_config
from e2e import compare, running_feedd, wait_for_truth, wait_on_commits
from test_store_writer import T0, candle, settings, stored

from feedd.candle import Candle
from feedd.intervals import MINUTE_MS, floor_open
from feedd.service import SHUTDOWN_TIMEOUT_S, Service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.database import Database
from feedd.store.reader import Reader
from feedd.store.writer import Writer

Send = trio.MemorySendChannel[Sequence[Candle]]
SUFFIXES = ("", "-wal", "-shm")
VENUES = ("binance_futures", "bybit_futures", "okx_futures")
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PLAN = {name: SYMBOLS for name in VENUES}
BOOTSTRAP = 10


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture
def lock_files(tmp_path: Path) -> Iterator[list[Path]]:
    """Files the test made immutable (with ``make_read_only``), made writable again after."""
    probe = tmp_path / "probe"
    probe.touch()
    try:
        chattr("+i", probe)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE, ext4/xfs)")
    chattr("-i", probe)
    locked: list[Path] = []
    yield locked
    for path in locked:
        if path.exists():
            chattr("-i", path)


def make_read_only(locked: list[Path], db: Path) -> None:
    """The database and its WAL immutable (not -shm, see the module docstring)."""
    paths = [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
    chattr("+i", *paths)
    locked.extend(paths)


def make_writable(locked: list[Path]) -> None:
    chattr("-i", *locked)
    locked.clear()


def delete_database(db: Path) -> None:
    for suffix in SUFFIXES:
        db.with_name(db.name + suffix).unlink(missing_ok=True)


async def test_database_opened_read_only_is_reopened_once_writable(
    tmp_path: Path, lock_files: list[Path]
) -> None:
    db = tmp_path / "w.db"
    Database.open(db).close()
    make_read_only(lock_files, db)
    writer = Writer(settings(tmp_path, max_batch=2, max_held=6))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            # SQLite opened the immutable file read-only without a word: say so at once.
            assert not writer.stats.healthy
            assert "read-only" in str(writer.stats.last_error)
            await send.send([candle(0), candle(1), candle(2)])
            await send.send([candle(3), candle(4), candle(5)])
            retries = writer.stats.retries
            await writer.wait_committed(lambda: writer.stats.retries >= retries + 3)
            # Held, bounded: at max_held the writer stops taking more and ingest waits.
            assert writer.stats.pending == 6 == writer.stats.held_limit
            with pytest.raises(trio.WouldBlock):
                send.send_nowait([candle(6)])
            assert stored(db) == {}
            make_writable(lock_files)
            await writer.wait_committed(lambda: writer.stats.committed == 6)
            assert writer.stats.healthy and writer.stats.last_error is None
            await send.send([candle(6)])
            await send.aclose()
    assert sorted(t for _, t in stored(db)) == [T0 + i * 60_000 for i in range(7)]
    assert writer.stats.dropped == 0


async def test_shutdown_with_a_read_only_store_ends_in_time_and_counts_the_loss(
    tmp_path: Path, lock_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Even with the collector full (waiting for room) and the channel backed up when ingest
    stops: what ingest left in the channel is taken at once and counted too."""
    db = tmp_path / "w.db"
    Database.open(db).close()
    make_read_only(lock_files, db)
    writer = Writer(settings(tmp_path, max_batch=2, max_held=4, final_commit_timeout_s=0.5))
    send, recv = trio.open_memory_channel[Sequence[Candle]](32)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(4)])
            await writer.wait_committed(lambda: writer.stats.retries >= 2)
            for i in range(4, 24):
                send.send_nowait([candle(i)])
            await trio.testing.wait_all_tasks_blocked()
            assert writer.stats.pending == 4 and recv.statistics().current_buffer_used == 20
            closed_at = trio.current_time()
            await send.aclose()
        took = trio.current_time() - closed_at
    # 0.5 s of retries after the end of ingest, plus one poll of the full collector (0.25 s).
    assert took < 3
    assert writer.stats.dropped == 24
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("could not commit 24 candles before shutdown" in m for m in errors), errors


async def test_cancelled_with_a_read_only_store_counts_the_loss(
    tmp_path: Path, lock_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "w.db"
    Database.open(db).close()
    make_read_only(lock_files, db)
    writer = Writer(settings(tmp_path, final_commit_timeout_s=0.5))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(3)])
            await writer.wait_committed(lambda: writer.stats.retries >= 1)
            nursery.cancel_scope.cancel()
    assert writer.stats.dropped == 3
    assert any("could not commit 3 candles" in r.getMessage() for r in caplog.records)


async def test_deleted_database_is_recreated_as_a_new_generation(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    writer = Writer(settings(tmp_path))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(3)])
            await writer.wait_committed(lambda: writer.stats.committed == 3)
            assert (writer.generation, writer.stats.recreated) == (0, 0)
            delete_database(db)
            await send.send([candle(10)])
            # The next batch notices the file gone, makes it anew and commits into it.
            assert await writer.wait_recreated(0) == 1
            await writer.wait_committed(lambda: writer.stats.committed == 4)
            assert stored(db) == {("BTCUSDT", T0 + 10 * 60_000): ("1.5", 1)}
            assert writer.stats.recreated == 1 and writer.stats.healthy
            await send.aclose()
    assert stored(db) == {("BTCUSDT", T0 + 10 * 60_000): ("1.5", 1)}


async def test_reader_follows_a_recreated_database(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    old = Database.open(db)
    old.write([candle(i) for i in range(3)])
    reader = Reader(db)
    try:
        assert len(await reader.candles("okx_futures", "BTCUSDT", "1m")) == 3
        delete_database(db)
        assert await reader.candles("okx_futures", "BTCUSDT", "1m") == []
        new = Database.open(db)
        new.write([candle(7)])
        rows = await reader.candles("okx_futures", "BTCUSDT", "1m")
        assert [r.open_time for r in rows] == [T0 + 7 * 60_000]
        new.close()
    finally:
        reader.close()
        old.close()


def test_open_reports_a_read_only_file_and_a_created_one(
    tmp_path: Path, lock_files: list[Path]
) -> None:
    db = tmp_path / "t.db"
    first = Database.open(db)
    assert (first.created, first.writable) == (True, True)
    first.close()
    make_read_only(lock_files, db)
    again = Database.open(db)
    try:
        assert (again.created, again.writable) == (False, False)
    finally:
        again.close(checkpoint=False)


# --- feedd against the simulator --------------------------------------------------------------


async def wait_health(client: httpx.AsyncClient, service: Service, ok: bool) -> None:
    """Wait (on commit attempts) for the writer's health, then check /health agrees."""
    writer = service.state.writer
    await writer.wait_committed(lambda: writer.stats.healthy == ok)
    response = await client.get("/health")
    assert response.status_code == (200 if ok else 503), response.text


async def wait_truth(service: Service, sim: Simulator, db: Path, start: int, end: int) -> None:
    for name in VENUES:
        await wait_for_truth(service, sim, db, name, SYMBOLS, start, end)


def differences(sim: Simulator, db: Path, start: int, end: int) -> list[str]:
    return [p for name in VENUES for p in compare(sim, db, name, SYMBOLS, start, end)]


def window_start(now_ms: int, spare: int) -> int:
    """The first open time of the bootstrap window of a round at ``now_ms``, less ``spare``
    minutes for rounds that take their clock a little later."""
    return floor_open("1m", now_ms) - (BOOTSTRAP - spare) * MINUTE_MS


async def test_feedd_on_a_read_only_database_commits_once_writable(
    tmp_path: Path, lock_files: list[Path]
) -> None:
    """Started on a database it may only read: 503 while it holds what ingest brings, and once
    the operator makes the file writable, 200 and the store equal to the truth."""
    db = tmp_path / "ohlcv.db"
    Database.open(db).close()
    make_read_only(lock_files, db)
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, client):
        start = window_start(sim.now_ms(), 1)
        writer = service.state.writer
        with trio.fail_after(60):
            await wait_health(client, service, False)
            assert "read-only" in str(writer.stats.last_error)
            # Past a minute's close, so that live candles are held as well as the bootstrap.
            await sim.sleep_until_ms(floor_open("1m", sim.now_ms()) + MINUTE_MS + 30_000)
            await writer.wait_committed(lambda: writer.stats.pending >= BOOTSTRAP * 6)
            assert stored(db) == {}
            make_writable(lock_files)
            await wait_health(client, service, True)
            end = floor_open("1m", sim.now_ms()) + 2 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_truth(service, sim, db, start, end)
        assert writer.stats.dropped == 0
    assert differences(sim, db, start, end) == []


async def test_sigterm_with_a_read_only_store_ends_in_time_and_says_what_it_lost(
    tmp_path: Path, lock_files: list[Path]
) -> None:
    db = tmp_path / "ohlcv.db"
    Database.open(db).close()
    make_read_only(lock_files, db)
    async with open_simulator(SimSettings(venues=VENUES)) as sim:
        config = write_config(tmp_path / "config.json", config_doc(sim, PLAN, bootstrap_load=5))
        feedd = FeeddProcess(config, tmp_path / "feedd.log")
        try:
            await feedd.start()
            async with httpx.AsyncClient(base_url=feedd.url, timeout=5) as client:

                async def holding() -> bool:
                    response = await client.get("/health")
                    return response.status_code == 503 and response.json()["store"]["pending"] > 0

                await poll_until(holding, 30, "feedd to hold candles it cannot commit")
            stopped_at = trio.current_time()
            assert await feedd.stop() == 0
            took = trio.current_time() - stopped_at
        finally:
            await feedd.aclose()
    log = feedd.log_text()
    assert "writer did not finish" not in log
    lost = [line for line in log.splitlines() if "could not commit" in line]
    assert len(lost) == 1 and " ERROR " in lost[0] and "before shutdown" in lost[0], lost
    # The writer gives up 5 s after ingest stopped; the whole shutdown is allowed 10 s.
    assert took < SHUTDOWN_TIMEOUT_S, took


async def test_deleted_database_is_recreated_and_healed_from_rest(tmp_path: Path) -> None:
    """The files deleted under a running feedd: noticed at the next commit, reported, made
    anew, and every stream backfilled again so the bootstrap window equals the truth."""
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, client):
        writer = service.state.writer
        first = window_start(sim.now_ms(), 1)
        with trio.fail_after(90):
            await wait_truth(service, sim, db, first, first + 3 * MINUTE_MS)
            delete_database(db)
            deleted_at = sim.now_ms()
            # Today's writer went on committing into the unlinked file: the path stayed empty.
            await wait_on_commits(service, db.exists)
            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json()["store"]["recreated"] == 1
            status = (await client.get("/status")).json()
            assert status["writer"]["recreated"] == 1
            metrics = (await client.get("/metrics")).text
            assert "feedd_writer_database_recreations_total 1.0" in metrics
            # The heal's window: the bootstrap as of the recreation (its round may take its
            # clock a few sim minutes later on a busy machine, hence the spare minutes).
            start = window_start(deleted_at, 4)
            end = floor_open("1m", sim.now_ms()) + 2 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_truth(service, sim, db, start, end)
        assert writer.stats.recreated == 1
    assert differences(sim, db, start, end) == []


async def test_database_deleted_without_its_wal_is_recreated_empty(tmp_path: Path) -> None:
    """Only ohlcv.db removed: what is left of it (-wal, -shm) must not come back to life."""
    db = tmp_path / "w.db"
    writer = Writer(settings(tmp_path))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(3)])
            await writer.wait_committed(lambda: writer.stats.committed == 3)
            db.unlink()
            await send.send([candle(10)])
            assert await writer.wait_recreated(0) == 1
            await writer.wait_committed(lambda: writer.stats.committed == 4)
            await send.aclose()
    assert stored(db) == {("BTCUSDT", T0 + 10 * 60_000): ("1.5", 1)}
