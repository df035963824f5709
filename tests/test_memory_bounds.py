"""Buffers that grow with load are bounded: a store slower than ingest makes ingest wait
after a few thousand held candles, not after the 200,000 kept for a failing store."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from feedd.candle import Candle, Source
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings

T0 = 1_700_000_040_000


def candle(i: int) -> Candle:
    return Candle("okx_futures", "BTCUSDT", "1m", T0 + i * 60_000, "1.0", "2.0", "0.5", "1.5",
                  "10", "15", None, True, Source.WS)  # fmt: skip


async def test_a_slow_healthy_store_makes_ingest_wait_at_max_ahead(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    # A long busy timeout: the commit waits for the lock below (slow, not failing).
    settings = WriterSettings(
        SqliteBackend(path), batch_interval_ms=10, max_records=1000, max_batch=2,
        max_held=1000, max_ahead=4, busy_timeout_ms=60_000,
    )  # fmt: skip
    writer = Writer(settings)
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            await send.send([candle(0), candle(1)])  # a full batch: its commit waits
            await send.send([candle(2), candle(3)])
            await trio.testing.wait_all_tasks_blocked()
            stats = writer.stats
            assert (stats.pending, stats.healthy, stats.committed) == (4, True, 0)
            assert stats.held_limit == 4  # /metrics' queue capacity: the limit in force
            with pytest.raises(trio.WouldBlock):  # max_ahead held: the collector stopped
                send.send_nowait([candle(4)])
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await send.send([candle(4)])
        await writer.wait_committed(lambda: writer.stats.committed == 5)
        await send.aclose()
    assert writer.stats.healthy and writer.stats.retries == 0


def test_a_batch_larger_than_the_held_limit_is_refused(tmp_path: Path) -> None:
    # Ingest would wait at max_ahead for a commit that only the cadence would start.
    with pytest.raises(ValueError, match="max_ahead"):
        Writer(
            WriterSettings(
                SqliteBackend(tmp_path / "w.db"), 60_000, 1000, max_batch=10, max_ahead=5
            )
        )
