"""Storage faults while feedd ingests all three venues: the database locked by another
process, the database files turned unwritable, the disk full, and /deleteDatabase under
load. While a fault lasts /health says 503; once it clears the writer commits what it held
(/health 200) and the database equals the truth.

How each fault is made, given that the suite runs as root (where chmod stops nothing):
- locked: a second process holds ``BEGIN EXCLUSIVE`` on the database;
- read-only: ``chattr +i`` on the database and its WAL (immutable files refuse writes even
  to root and even through descriptors opened before). Not the ``-shm`` file: SQLite maps it
  into memory, and a write to an immutable mapping is a SIGBUS, which no program survives
  and no real read-only condition produces (a read-only remount is refused while a file is
  open for writing);
- disk full: the database lives on a small tmpfs mounted for the test, filled by a file.
Each test is skipped where the machine does not allow its tool (chattr, mount).
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from e2e import compare, running_feedd, wait_for_truth

from chaos.harness import VENUES, read_line
from feedd.intervals import MINUTE_MS
from feedd.service import Service
from feedd.sim.app import Simulator
from feedd.sim.symbols import universe

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PLAN = {name: SYMBOLS for name in VENUES}
BOOTSTRAP = 5


def run(*command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, check=False)


def can(*command: str) -> bool:
    return shutil.which(command[0]) is not None and run(*command).returncode == 0


async def wait_health(client: httpx.AsyncClient, writer_ok: bool, service: Service) -> None:
    """Wait (on commit attempts) for the writer's health, then check /health agrees."""
    writer = service.state.writer
    await writer.wait_committed(lambda: writer.stats.healthy == writer_ok)
    response = await client.get("/health")
    assert response.status_code == (200 if writer_ok else 503), response.text


async def wait_all(service: Service, sim: Simulator, db: Path, start: int, end: int) -> None:
    for name in VENUES:
        await wait_for_truth(service, sim, db, name, SYMBOLS, start, end)


def assert_equal_to_truth(sim: Simulator, db: Path, start: int, end: int) -> None:
    for name in VENUES:
        assert compare(sim, db, name, SYMBOLS, start, end) == [], name


@contextlib.asynccontextmanager
async def fault_then_heal(
    tmp_path: Path, db_dir: Path | None = None
) -> AsyncIterator[tuple[Simulator, Service, httpx.AsyncClient, list[int]]]:
    """feedd on every venue; the body injects and clears a fault; afterwards the store must
    equal the truth from the bootstrap on to a few minutes past the body."""
    folder = db_dir or tmp_path
    db = folder / "ohlcv.db"
    window: list[int] = []
    async with running_feedd(folder, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, client):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS - (BOOTSTRAP - 1) * MINUTE_MS
        with trio.fail_after(60):
            await sim.sleep_until_ms(start + BOOTSTRAP * MINUTE_MS + 30_000)
            yield sim, service, client, window
            await wait_health(client, True, service)
            end = sim.now_ms() // MINUTE_MS * MINUTE_MS + 2 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_all(service, sim, db, start, end)
        window[:] = [start, end]
    assert_equal_to_truth(sim, db, start, end)


async def test_database_locked_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "ohlcv.db"
    holder = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"  # hold the lock until the test closes our stdin
    )
    async with fault_then_heal(tmp_path) as (_sim, service, client, _):
        retries = service.state.writer.stats.retries
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", holder, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stdin is not None
            assert await read_line(process.stdout) == b"locked\n"
            # Longer than a batch interval by far: the commit waits out busy_timeout (2 s)
            # and fails; ingest goes on meanwhile, the writer holding what arrives.
            await wait_health(client, False, service)
            assert "locked" in str(service.state.writer.stats.last_error)
        finally:
            if process.stdin is not None:
                await process.stdin.aclose()
            assert await process.wait() == 0
    assert service.state.writer.stats.retries > retries


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


async def test_database_files_turned_read_only(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.touch()
    if not can("chattr", "+i", str(probe)):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE and ext4/xfs)")
    run("chattr", "-i", str(probe))
    db = tmp_path / "ohlcv.db"
    async with fault_then_heal(tmp_path) as (_sim, service, client, _):
        with immutable(db, db.with_name("ohlcv.db-wal")):
            await wait_health(client, False, service)
            error = str(service.state.writer.stats.last_error)
            assert "I/O" in error or "read-only" in error, error
            # Reads go on: the API answers from the file it can no longer write.
            response = await client.get("/ohlcv/binance_futures/BTCUSDT/1m", params={"limit": 3})
            assert response.status_code == 200 and len(response.json()) == 3


def truncate_wal(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()
    assert db.with_name(db.name + "-wal").stat().st_size == 0


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; returns bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


async def test_disk_full(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if not can("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        async with fault_then_heal(tmp_path, mount) as (_sim, service, client, _):
            # SQLite writes over its WAL from the start after each checkpoint, so a full
            # disk shows only once the WAL must grow: empty it first (as an operator's
            # sqlite3 may), so that feedd's next commit needs new blocks.
            await trio.to_thread.run_sync(truncate_wal, mount / "ohlcv.db")
            filler = mount / "filler"
            await trio.to_thread.run_sync(fill, filler)
            await wait_health(client, False, service)
            assert "full" in str(service.state.writer.stats.last_error)
            filler.unlink()
    finally:
        run("umount", "-l", str(mount))


async def test_delete_database_under_full_load(tmp_path: Path) -> None:
    """Many streams, a bootstrap still running, clients reading: /deleteDatabase empties the
    store at once, ingest goes on, and from the wipe's minute on the store equals the truth."""
    symbols = list(universe(1, 600))[:40]  # listed by every simulated venue
    plan = {name: symbols for name in VENUES}
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, plan, bootstrap_load=1000) as (sim, service, client):
        writer = service.state.writer
        with trio.fail_after(60):
            await writer.wait_committed(lambda: writer.stats.committed > 20_000)
            backfilling = sum(s.backfill_pending for s in service.state.supervisor.stats.values())
            before = stored_rows(db)
            async with trio.open_nursery() as readers:
                for name in VENUES:
                    url = f"/ohlcv/{name}/{symbols[0]}/1m?limit=1000"
                    readers.start_soon(client.get, url)
                response = await client.post("/deleteDatabase", json={"confirm": "DELETE"})
                wiped_by = sim.now_ms()
            after = stored_rows(db)
            assert response.status_code == 200, response.text
            assert (await client.get("/health")).status_code == 200
            # The first candle to close after the wipe had finished: from it on, all stays.
            first = wiped_by // MINUTE_MS * MINUTE_MS
            end = first + 3 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            with trio.move_on_after(20):
                for name in VENUES:
                    await wait_for_truth(service, sim, db, name, symbols, first, end)
    assert backfilling > 0  # the wipe met a bootstrap under way
    for name in VENUES:
        assert compare(sim, db, name, symbols, first, end) == [], name
        # Nothing stored is false, older candles included (a backfill may rewrite some).
        stored = compare(sim, db, name, symbols, first - 1000 * MINUTE_MS, end)
        assert all(problem.endswith("missing") for problem in stored)
    # The bootstraps under way go on after the wipe and may fetch every older candle again,
    # the faster the writer the likelier: what is gone shows only just after the wipe.
    assert after < before / 2, (before, after)


def stored_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM candles").fetchone()[0])
    finally:
        conn.close()
