"""The async writer: draining, coalescing, retries while locked, backpressure, listeners."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from feedd.candle import Candle, Source
from feedd.cluster import StoreEpochs
from feedd.errors import StoreError
from feedd.store import codec, journal
from feedd.store.database import Database
from feedd.store.sqlite import SqliteBackend
from feedd.store.state import Pending
from feedd.store.writer import JOB_SLICE, Writer, WriterSettings

T0 = 1_700_000_040_000
Send = trio.MemorySendChannel[Sequence[Candle]]


def candle(i: int, close: str = "1.5", *, closed: bool = True, symbol: str = "BTCUSDT") -> Candle:
    return Candle("okx_futures", symbol, "1m", T0 + i * 60_000, "1.0", "2.0", "0.5", close,
                  "10", "15", None, closed, Source.WS)  # fmt: skip


def stored(path: Path) -> dict[tuple[str, int], tuple[str, int]]:
    """(symbol, open_time) -> (close text, flags) for every stored candle."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT symbol, open_time, close, flags FROM candles JOIN series ON series.id = series"
        ).fetchall()
    finally:
        conn.close()
    return {(s, t): (codec.decode_str(c), f) for s, t, c, f in found}


def settings(tmp_path: Path, **kw: object) -> WriterSettings:
    base: dict[str, object] = dict(
        path=tmp_path / "w.db", batch_interval_ms=10, max_records=1000,
        busy_timeout_ms=10, retry_initial_s=0.01, retry_max_s=0.05,
    )  # fmt: skip
    base.update(kw)
    base["backend"] = SqliteBackend(base.pop("path"))  # type: ignore[arg-type]
    return WriterSettings(**base)  # type: ignore[arg-type]


#: a writer that loses candles makes a wait for their commit fail here instead of hanging
WAIT_S = 60


async def until(writer: Writer, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT_S):
        await writer.wait_committed(predicate)


async def committed(writer: Writer, n: int) -> None:
    await until(writer, lambda: writer.stats.committed >= n)


def test_pending_coalesces_with_the_database_rule() -> None:
    pending = Pending()
    pending.add([candle(0, "1", closed=False), candle(0, "2", closed=True)])
    pending.add([candle(0, "3", closed=False), candle(1, "4", closed=False)])
    pending.add([candle(1, "5", closed=False)])
    taken = pending.take()
    assert [(c.open_time, c.close, c.closed) for c in taken.values()] == [
        (T0, "2", True),
        (T0 + 60_000, "5", False),
    ]
    assert list(taken) == [c.key for c in taken.values()]  # fold spells the key out
    assert len(pending) == 0


async def test_writer_commits_everything_on_end_of_channel(tmp_path: Path) -> None:
    # A long cadence: only the end of the channel can make these commit.
    writer = Writer(settings(tmp_path, batch_interval_ms=3_600_000))
    send, recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        async with send:
            await send.send([candle(i) for i in range(100)])
            await send.send([candle(0, "9", closed=False), candle(100, "7", closed=False)])
            await send.send([candle(i, symbol="ETHUSDT") for i in range(3)])
    rows = stored(tmp_path / "w.db")
    assert len(rows) == 104
    assert rows[("BTCUSDT", T0)] == ("1.5", 1)  # the late forming update lost to the closed one
    assert rows[("BTCUSDT", T0 + 100 * 60_000)] == ("7", 0)
    stats = writer.stats
    assert (stats.received, stats.committed, stats.pending, stats.healthy) == (105, 104, 0, True)


async def test_writer_commits_held_candles_when_cancelled(tmp_path: Path) -> None:
    writer = Writer(settings(tmp_path, batch_interval_ms=3_600_000))
    send, recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await send.send([candle(i) for i in range(50)])
        await trio.testing.wait_all_tasks_blocked()
        assert writer.stats.pending == 50
        nursery.cancel_scope.cancel()
    assert len(stored(tmp_path / "w.db")) == 50


async def test_writer_holds_and_retries_while_locked(tmp_path: Path) -> None:
    # Retries slow enough that none folds the batches below while the test sends them.
    writer = Writer(
        settings(tmp_path, max_batch=2, max_held=6, retry_initial_s=0.2, retry_max_s=0.2)
    )
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        locker = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        await send.send([candle(0), candle(1)])
        await until(writer, lambda: not writer.stats.healthy)
        assert "locked" in (writer.stats.last_error or "")
        await send.send([candle(2), candle(3)])
        await send.send([candle(1, "8"), candle(4), candle(5)])  # coalesces with the held 1
        await trio.testing.wait_all_tasks_blocked()
        # The retried batch and the newer pending one fold only at the next attempt, so the
        # candle at 1 is counted twice meanwhile: the held count is an upper bound
        # (6 had a retry already folded them).
        assert writer.stats.pending in (6, 7)
        with pytest.raises(trio.WouldBlock):  # max_held reached: the collector stopped
            send.send_nowait([candle(6)])
        assert stored(tmp_path / "w.db") == {}
        locker.execute("ROLLBACK")
        locker.close()
        await send.send([candle(6)])
        await until(writer, lambda: writer.stats.committed == 7)
        stats = writer.stats
        assert stats.healthy and stats.last_error is None and stats.retries >= 1
        await send.aclose()
    rows = stored(tmp_path / "w.db")
    assert sorted(t for _, t in rows) == [T0 + i * 60_000 for i in range(7)]
    assert rows[("BTCUSDT", T0 + 60_000)] == ("8", 1)


async def test_commit_listener_sees_batches_and_a_full_one_only_loses(tmp_path: Path) -> None:
    writer = Writer(settings(tmp_path))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        with writer.open_commit_listener() as fast, writer.open_commit_listener(1) as slow:
            for i in range(3):
                await send.send([candle(i)])
                await committed(writer, i + 1)
            got = [c.open_time for _ in range(3) for c in await fast.receive()]
            assert got == [T0, T0 + 60_000, T0 + 120_000]
            assert [c.open_time for c in await slow.receive()] == [T0]
            assert writer.stats.listener_overflow == 2
        await send.aclose()


async def test_writer_prunes_to_max_records(tmp_path: Path) -> None:
    writer = Writer(settings(tmp_path, max_records=5))
    send, recv = trio.open_memory_channel[Sequence[Candle]](1)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        async with send:
            await send.send([candle(i) for i in range(20)])
    assert sorted(t for _, t in stored(tmp_path / "w.db")) == [
        T0 + i * 60_000 for i in range(15, 20)
    ]
    assert writer.stats.pruned == 15


async def test_wipe_while_running(tmp_path: Path) -> None:
    writer = Writer(settings(tmp_path))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await send.send([candle(i) for i in range(10)])
        await until(writer, lambda: writer.stats.committed == 10)
        epochs = StoreEpochs(writer)
        assert epochs.emptied == 0
        await writer.wipe()
        assert stored(tmp_path / "w.db") == {}
        # What the engine's heals compare (a heal fetched across a wipe is dropped); a wipe
        # here is not a store made anew: nothing bootstraps again.
        assert (epochs.emptied, epochs.generation) == (1, 0)
        await send.send([candle(20, symbol="ETHUSDT")])
        await send.aclose()
    assert stored(tmp_path / "w.db") == {("ETHUSDT", T0 + 20 * 60_000): ("1.5", 1)}


async def test_no_live_commit_carries_a_journal_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full journal moves in an upkeep of its own right after the commit that filled it,
    so the next commit's candles do not wait for the move: all of it, also when the commit
    that filled it went past ``JOURNAL_ROWS`` (12 rows of four minutes in a journal of 8)."""
    monkeypatch.setattr(journal, "JOURNAL_ROWS", 8)
    due_at_write: list[bool] = []
    upkeeps = 0

    class Recording(SqliteBackend):
        def open_writer(self, *, busy_timeout_ms: int) -> Database:
            db = super().open_writer(busy_timeout_ms=busy_timeout_ms)
            write, upkeep = db.write, db.upkeep

            def recorded_write(candles: Sequence[Candle]) -> int:
                due_at_write.append(db.upkeep_due)  # the write would move the journal
                return write(candles)

            def recorded_upkeep() -> None:
                nonlocal upkeeps
                upkeeps += 1
                upkeep()

            db.write, db.upkeep = recorded_write, recorded_upkeep  # type: ignore[method-assign]
            return db

    writer = Writer(attrs.evolve(settings(tmp_path), backend=Recording(tmp_path / "w.db")))
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        for step in range(10):  # two minutes of three symbols a commit
            await send.send(
                [candle(m, symbol=s) for m in (2 * step, 2 * step + 1) for s in symbols]
            )
            await committed(writer, 6 * (step + 1))
        await send.aclose()
    assert len(due_at_write) == 10 and not any(due_at_write)
    assert upkeeps == 5  # one per full journal
    assert len(stored(tmp_path / "w.db")) == 60


async def test_unopenable_database_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    writer = Writer(settings(tmp_path, path=tmp_path / "file" / "w.db"))
    _, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with pytest.raises(StoreError, match="cannot open"):
        await writer.run(recv)


async def test_a_big_job_write_goes_in_slices_with_its_document_last(tmp_path: Path) -> None:
    """A month from an archive is ~44,640 candles: in one transaction it held the store for
    a second while live commits waited. It goes in slices, the lock given up between them,
    and the job's document is saved with the last one (never ahead of its candles)."""
    calls: list[tuple[str, int]] = []

    class Recording(SqliteBackend):
        def open_writer(self, *, busy_timeout_ms: int) -> Database:
            db = super().open_writer(busy_timeout_ms=busy_timeout_ms)
            write, write_job = db.write, db.write_job

            def recorded_write(candles: Sequence[Candle]) -> int:
                calls.append(("write", len(candles)))
                return write(candles)

            def recorded_job(candles: Sequence[Candle], *args: Any) -> int:
                calls.append(("job", len(candles)))
                return write_job(candles, *args)

            db.write, db.write_job = recorded_write, recorded_job  # type: ignore[method-assign]
            return db

    base = settings(tmp_path, max_records=0)
    writer = Writer(attrs.evolve(base, backend=Recording(tmp_path / "w.db")))
    send, recv = trio.open_memory_channel[Sequence[Candle]](10)
    total = 2 * JOB_SLICE + 7
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await writer.write_job([candle(i) for i in range(total)], "j1", 1, '{"id": "j1"}')
        await writer.write_job([], "j1", 1, '{"id": "j1", "done": true}')
        assert await writer.load_jobs() == ['{"id": "j1", "done": true}']
        await send.aclose()
    assert calls == [("write", JOB_SLICE), ("write", JOB_SLICE), ("job", 7), ("job", 0)]
    assert len(stored(tmp_path / "w.db")) == total


async def test_live_candles_pending_commit_before_each_job_slice(tmp_path: Path) -> None:
    """Live first: candles ingest handed over are committed before a job's slice takes the
    store, not after the batch interval (here far off) and the job's slices."""
    calls: list[tuple[str, int]] = []

    class Recording(SqliteBackend):
        def open_writer(self, *, busy_timeout_ms: int) -> Database:
            db = super().open_writer(busy_timeout_ms=busy_timeout_ms)
            write, write_job = db.write, db.write_job

            def recorded_write(candles: Sequence[Candle]) -> int:
                calls.append(("write", len(candles)))
                return write(candles)

            def recorded_job(candles: Sequence[Candle], *args: Any) -> int:
                calls.append(("job", len(candles)))
                return write_job(candles, *args)

            db.write, db.write_job = recorded_write, recorded_job  # type: ignore[method-assign]
            return db

    base = settings(tmp_path, max_records=0, batch_interval_ms=600_000)
    writer = Writer(attrs.evolve(base, backend=Recording(tmp_path / "w.db")))
    send, recv = trio.open_memory_channel[Sequence[Candle]](10)
    job = [candle(i, symbol="ETHUSDT") for i in range(JOB_SLICE + 7)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(3)])
            await trio.testing.wait_all_tasks_blocked()
            await writer.write_job(job, "j1", 1, '{"id": "j1"}')
            # Before the job's first slice, not at the end of the (10 min) interval.
            assert calls == [("write", 3), ("write", JOB_SLICE), ("job", 7)]
            assert writer.stats.committed == 3 + len(job)
            await send.aclose()
    assert len(stored(tmp_path / "w.db")) == 3 + len(job)
