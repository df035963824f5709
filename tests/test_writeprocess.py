"""The store writer in a child process: failures read as the backend's own, a killed child
is a store failure the writer recovers from, the child's log lines reach feedd's log.

What a writer does (the upsert rule, jobs, wipe...) is the store contract's business:
tests/test_store_contract_write.py runs it over each backend in a writer process too.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.store import journal
from feedd.store.sqlite import SqliteBackend
from feedd.store.writeprocess import ProcessBackend, _candles, _wire
from feedd.store.writer import Writer, WriterSettings

T0 = 1_700_000_040_000


def candle(i: int, close: str = "1.5") -> Candle:
    return Candle("okx_futures", "BTCUSDT", "1m", T0 + i * 60_000, "1.0", "2.0", "0.5", close,
                  "10", "15", None, True, Source.WS)  # fmt: skip


_text = st.text(max_size=12)
_int64 = st.integers(0, 2**63 - 1)
_candle = st.builds(
    Candle, _text, _text, _text, _int64, _text, _text, _text, _text, _text, _text,
    st.none() | _int64, st.booleans(), st.sampled_from(Source),
)  # fmt: skip


@given(st.lists(_candle, max_size=20))
def test_candles_cross_to_the_child_unchanged(candles: list[Candle]) -> None:
    back = _candles(_wire(candles))
    assert back == candles
    # The SQLite writer tells live rows by identity (``source is Source.WS``): a plain int
    # would equal the member and still take the slower path.
    assert all(type(c.source) is Source for c in back)
    assert all(type(c.trades) is type(o.trades) for c, o in zip(back, candles, strict=True))


def writer_children() -> list[psutil.Process]:
    children = psutil.Process().children()
    return [c for c in children if "feedd.store.writeprocess" in c.cmdline()]


def stored_times(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [t for (t,) in conn.execute("SELECT open_time FROM candles ORDER BY open_time")]
    finally:
        conn.close()


def test_open_failure_reads_as_the_backends_own(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    inner = SqliteBackend(tmp_path / "file" / "w.db")
    with pytest.raises(StoreError) as direct:
        inner.open_writer(busy_timeout_ms=100)
    with pytest.raises(StoreError) as apart:
        ProcessBackend(inner).open_writer(busy_timeout_ms=100)
    assert str(apart.value) == str(direct.value)
    assert writer_children() == []  # the child that could not open is gone


def test_child_log_lines_reach_feedds_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = ProcessBackend(SqliteBackend(tmp_path / "w.db")).open_writer(busy_timeout_ms=100)
    try:
        with caplog.at_level(logging.WARNING, logger="feedd.store"):
            assert db.write([candle(0, "nan"), candle(1)]) == 1
    finally:
        db.close()
    assert db.rejected == 1
    assert [(r.name, r.levelno) for r in caplog.records] == [("feedd.store", logging.WARNING)]
    assert "dropping candle" in caplog.records[0].getMessage()
    assert "'nan'" in caplog.records[0].getMessage()


def test_upkeep_due_crosses_from_the_child(tmp_path: Path) -> None:
    """The writer asks ``upkeep_due`` at every tick, without a call: each answer carries it."""
    db = ProcessBackend(SqliteBackend(tmp_path / "w.db")).open_writer(busy_timeout_ms=100)
    try:
        assert not db.upkeep_due
        # One live series, newer than anything stored: a full journal (JOURNAL_ROWS).
        assert db.write([candle(i) for i in range(journal.JOURNAL_ROWS)]) == journal.JOURNAL_ROWS
        assert db.upkeep_due
        db.upkeep()
        assert not db.upkeep_due
        conn = sqlite3.connect(tmp_path / "w.db")
        try:
            (moved,) = conn.execute("SELECT count(*) FROM candle_rows").fetchone()
        finally:
            conn.close()
        assert moved == journal.JOURNAL_ROWS
    finally:
        db.close()


def test_child_ignores_signals_meant_for_the_service(tmp_path: Path) -> None:
    """systemd and a terminal signal every process of the service: the child stays to serve
    feedd's drain and leaves when feedd closes it."""
    db = ProcessBackend(SqliteBackend(tmp_path / "w.db")).open_writer(busy_timeout_ms=100)
    (child,) = writer_children()
    child.send_signal(signal.SIGTERM)
    child.send_signal(signal.SIGINT)
    assert db.write([candle(0)]) == 1
    db.close()
    assert not child.is_running()  # closing waited for it
    assert stored_times(tmp_path / "w.db") == [T0]


async def test_a_killed_child_is_a_store_failure_the_writer_recovers_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "w.db"
    settings = WriterSettings(
        ProcessBackend(SqliteBackend(path)), 10, 0, retry_initial_s=0.01, retry_max_s=0.05
    )
    writer = Writer(settings)
    send, recv = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            await send.send([candle(i) for i in range(10)])
            await writer.wait_committed(lambda: writer.stats.committed == 10)
            (first,) = writer_children()
            first.kill()
            await send.send([candle(i) for i in range(10, 20)])
            await writer.wait_committed(lambda: writer.stats.committed == 20)
            (second,) = writer_children()
            await send.aclose()
    stats = writer.stats
    assert second.pid != first.pid
    assert stats.retries >= 1 and stats.healthy and stats.dropped == 0
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failures and "writer process is gone: it was killed by SIGKILL" in failures[0]
    assert stored_times(path) == [T0 + i * 60_000 for i in range(20)]
    assert writer.generation == 0  # the same file: nothing was lost, no bootstrap again
    assert not second.is_running() and writer_children() == []
