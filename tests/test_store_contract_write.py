"""The write side of the store contract, once over SQLite and once over a real PostgreSQL.

What a ``WriteConnection`` must do whatever the backend: a closed candle is never overwritten
by a forming one, rewrites are idempotent, concurrent writers neither deadlock nor duplicate,
coverage runs follow the closed candles, retention, wipe, jobs. Rows are read back straight
from the tables (SQLite through the codec, PostgreSQL as numeric text).
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
from test_store_runs_live import step

from feedd.candle import Candle, Source
from feedd.store.backend import Backend, WriteConnection
from feedd.store.codec import decode_str
from feedd.store.coverage import segments
from feedd.store.journal import JOURNAL_ROWS
from feedd.store.retention import WALKS_PER_ROUND
from feedd.store.writer import Writer, WriterSettings

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["store_backends"]

EX = "binance_futures"
MIN = 60_000
T0 = 1_700_000_040_000  # a whole minute
#: (open, high, low, close, volume, quote_volume, trades, closed, source) per (symbol, t)
Stored = dict[tuple[str, int], tuple[Any, ...]]


def candle(
    symbol: str,
    t: int,
    close: str = "1.50",
    *,
    closed: bool = True,
    source: Source = Source.WS,
    interval: str = "1m",
) -> Candle:
    return Candle(EX, symbol, interval, t, "1.25", "2.000", "1", close, "3", "4.5", 7, closed,
                  source)  # fmt: skip


@pytest.fixture
def backend(any_writer: Backend) -> Backend:
    """Every backend, and each with its writer in a child process."""
    return any_writer


def plain(backend: Backend) -> Backend:
    """The backend a writer process wraps (its tables are what the tests read)."""
    return getattr(backend, "inner", backend)


def stored(backend: Backend) -> Stored:
    """Every stored candle, values as decimal text, read from the tables themselves."""
    backend = plain(backend)
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(backend.location)) as conn:
            rows = conn.execute(
                "SELECT symbol, open_time, open, high, low, close, volume, quote_volume, trades,"
                " flags FROM candles JOIN series ON series.id = candles.series"
            ).fetchall()
        return {
            (r[0], r[1]): (*(decode_str(v) for v in r[2:8]), r[8], bool(r[9] & 1), r[9] & 6)
            for r in rows
        }
    with psycopg.connect(backend.dsn) as pg:  # type: ignore[attr-defined]
        rows = pg.execute(
            "SELECT symbol, open_time, open, high, low, close, volume, quote_volume, trades,"
            " flags FROM candles JOIN series ON series.id = candles.series"
        ).fetchall()
    return {
        (r[0], r[1]): (*(_text(v) for v in r[2:8]), r[8], bool(r[9] & 1), r[9] & 6) for r in rows
    }


def _text(value: Decimal) -> str:
    return format(value, "f")


def count_rows(backend: Backend, table: str) -> int:
    backend = plain(backend)
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(backend.location)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    with psycopg.connect(backend.dsn) as pg:  # type: ignore[attr-defined]
        row = pg.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def db(backend: Backend) -> Iterator[WriteConnection]:
    backend.prepare()
    conn = backend.open_writer(busy_timeout_ms=5000)
    try:
        yield conn
    finally:
        conn.close()


def closes(backend: Backend) -> dict[tuple[str, int], str]:
    return {key: row[3] for key, row in stored(backend).items()}


# -- the upsert rule ----------------------------------------------------------------------------


def test_open_creates_then_reopens_the_same_store(backend: Backend) -> None:
    backend.prepare()
    first = backend.open_writer(busy_timeout_ms=5000)
    assert first.created and first.writable and first.identity is not None
    first.close()
    again = backend.open_writer(busy_timeout_ms=5000)
    assert not again.created and again.identity == first.identity
    assert not again.moved()
    again.close()


def test_closed_never_overwritten_by_forming(backend: Backend, db: WriteConnection) -> None:
    db.write([candle("BTCUSDT", T0, "10")])
    db.write([candle("BTCUSDT", T0, "11", closed=False)])
    assert stored(backend)[("BTCUSDT", T0)][3:8] == ("10", "3", "4.5", 7, True)


def test_forming_yields_to_newer_forming_then_closed(backend: Backend, db: WriteConnection) -> None:
    db.write([candle("BTCUSDT", T0, "10", closed=False)])
    db.write([candle("BTCUSDT", T0, "11", closed=False)])
    assert stored(backend)[("BTCUSDT", T0)][3] == "11"
    db.write([candle("BTCUSDT", T0, "12", source=Source.REST)])
    assert stored(backend)[("BTCUSDT", T0)][3:] == ("12", "3", "4.5", 7, True, 2)
    db.write([candle("BTCUSDT", T0, "13", source=Source.ARCHIVE)])  # closed replaces closed
    assert stored(backend)[("BTCUSDT", T0)][3:] == ("13", "3", "4.5", 7, True, 4)


def test_one_batch_applies_in_order(backend: Backend, db: WriteConnection) -> None:
    """Several updates of one candle in a batch: the last wins, except a forming one after
    a closed one (as row-by-row upserts would leave it)."""
    db.write(
        [
            candle("BTCUSDT", T0, "1", closed=False),
            candle("BTCUSDT", T0, "2", closed=False),
            candle("ETHUSDT", T0, "3"),
            candle("ETHUSDT", T0, "4", closed=False),
        ]
    )
    assert closes(backend) == {("BTCUSDT", T0): "2", ("ETHUSDT", T0): "3"}


def test_values_are_kept_exactly(backend: Backend, db: WriteConnection) -> None:
    c = Candle(EX, "BTCUSDT", "1m", T0, "94172.40", "0.000001230", "-0.5", "100",
               "123456789.123456789", ".5", None, True, Source.WS)  # fmt: skip
    db.write([c])
    assert stored(backend)[("BTCUSDT", T0)] == (
        "94172.40", "0.000001230", "-0.5", "100", "123456789.123456789", "0.5", None, True, 0
    )  # fmt: skip


def test_equal_value_in_other_text_replaces_it(backend: Backend, db: WriteConnection) -> None:
    """1.5 and 1.50 are equal numbers but not the same text: the newer text is kept."""
    db.write([candle("BTCUSDT", T0, "1.5")])
    db.write([candle("BTCUSDT", T0, "1.50")])
    assert closes(backend) == {("BTCUSDT", T0): "1.50"}
    db.write([candle("BTCUSDT", T0, "1.50", source=Source.REST)])  # same values, other source
    assert stored(backend)[("BTCUSDT", T0)][-1] == 2


def test_idempotent_rewrite(backend: Backend, db: WriteConnection) -> None:
    batch = [candle(s, T0 + i * MIN, str(i)) for s in ("BTCUSDT", "ETHUSDT") for i in range(50)]
    db.write(batch)
    first = stored(backend)
    runs = db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62)
    db.write(batch)
    db.write(list(reversed(batch)))
    assert stored(backend) == first and len(first) == 100
    assert db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == runs == [(T0, T0 + 49 * MIN)]
    assert count_rows(backend, "series") == 2 and count_rows(backend, "runs") == 2


def test_unstorable_values_are_counted_and_skipped(backend: Backend, db: WriteConnection) -> None:
    # (SQLite's codec also takes other scripts' digits, "\u0661\u0662" as 12; numeric would not)
    bad = ["NaN", "1e5", "abc", "", "1.2.3", " 1", "Infinity", "-"]
    batch = [candle("BTCUSDT", T0, "5")]
    batch += [candle("BTCUSDT", T0 + (i + 1) * MIN, value) for i, value in enumerate(bad)]
    batch.append(candle("ETHUSDT", T0, "6"))
    db.write(batch)
    assert db.rejected == len(bad)
    assert closes(backend) == {("BTCUSDT", T0): "5", ("ETHUSDT", T0): "6"}


def test_upkeep_changes_no_candle(backend: Backend, db: WriteConnection) -> None:
    """Whatever a backend leaves for between commits (SQLite: moving a full journal of live
    rows into its table) leaves every candle as it was, and the upsert rule in force."""
    feed = [candle(s, T0 + i * MIN, f"{i}.5") for i in range(JOURNAL_ROWS // 2)
            for s in ("BTCUSDT", "ETHUSDT")]  # fmt: skip
    db.write(feed)
    before = stored(backend)
    upkeeps = 0
    while db.upkeep_due:
        db.upkeep()
        upkeeps += 1
        assert upkeeps < 10, "upkeep makes no progress"
    assert stored(backend) == before and len(before) == len(feed)
    db.write([candle("BTCUSDT", T0, "9", closed=False)])  # a moved closed row stays
    assert stored(backend) == before


# -- coverage runs, retention, wipe, jobs -----------------------------------------------------


def test_closed_runs_follow_closed_candles(db: WriteConnection) -> None:
    times = [0, 1, 2, 5, 6, 9]
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in times])
    db.write([candle("BTCUSDT", T0 + 3 * MIN, closed=False)])  # forming: no coverage
    runs = db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62)
    assert runs == [(T0, T0 + 2 * MIN), (T0 + 5 * MIN, T0 + 6 * MIN), (T0 + 9 * MIN,) * 2]
    # clipped to the range asked
    assert db.closed_runs(EX, "BTCUSDT", "1m", T0 + MIN, T0 + 5 * MIN) == [
        (T0 + MIN, T0 + 2 * MIN),
        (T0 + 5 * MIN, T0 + 5 * MIN),
    ]
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in (3, 4, 7, 8)])  # fills every hole
    assert db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == [(T0, T0 + 9 * MIN)]
    assert db.closed_runs(EX, "ETHUSDT", "1m", 0, 2**62) == []


@pytest.mark.parametrize("seed", range(3))
def test_runs_follow_live_shaped_batches(db: WriteConnection, seed: int) -> None:
    """Each batch closes the next candles of many series (the runs it continues are extended
    in place), with gaps, re-stores, forming updates and old holes filled between: the runs
    always equal the stretches of the closed candles written."""
    rng = random.Random(seed)
    series = [(f"S{i}USDT", interval) for i in range(6) for interval in ("1m", "1M")]
    newest = dict.fromkeys(series, T0)
    covered: dict[tuple[str, str], set[int]] = {key: set() for key in series}
    for _ in range(40):
        batch = []
        for (symbol, interval), t in newest.items():
            roll = rng.random()
            if roll < 0.3:
                continue
            if roll < 0.8:
                times = [step(interval, t, k) for k in range(1, rng.randrange(2, 5))]
            elif roll < 0.87:
                times = [step(interval, t, rng.randrange(2, 5))]  # leaves a hole
            elif roll < 0.93:
                times = [t]  # stored again
            else:
                times = [step(interval, T0, rng.randrange(0, 12))]  # maybe fills an old hole
            newest[symbol, interval] = max(t, *times)
            for x in times:
                closed = rng.random() < 0.9
                batch.append(candle(symbol, x, closed=closed, interval=interval))
                if closed:
                    covered[symbol, interval].add(x)
        db.write(batch)
        for (symbol, interval), times in covered.items():
            expected = list(segments(interval, times))
            assert db.closed_runs(EX, symbol, interval, 0, 2**62) == expected, (symbol, interval)


def test_prune_keeps_newest_of_series_written_since(backend: Backend, db: WriteConnection) -> None:
    db.write([candle(s, T0 + i * MIN) for s in ("BTCUSDT", "ETHUSDT") for i in range(10)])
    assert db.prune(4) == 12
    assert sorted(stored(backend)) == [
        (s, T0 + i * MIN) for s in ("BTCUSDT", "ETHUSDT") for i in range(6, 10)
    ]
    assert db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == [(T0 + 6 * MIN, T0 + 9 * MIN)]
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in range(10, 12)])
    assert db.prune(4) == 2  # only BTCUSDT was written since
    assert db.prune(0) == 0
    assert db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == [(T0 + 8 * MIN, T0 + 11 * MIN)]


def test_prune_trims_a_full_series_once_per_slack_of_new_candles(
    backend: Backend, db: WriteConnection
) -> None:
    """At 200 kept the slack is 2 (feedd/store/retention.py): a series is walked and trimmed
    back to 200 only once it may hold more than 202, not at every round."""
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in range(205)])
    assert db.prune(200) == 5
    db.write([candle("BTCUSDT", T0 + 205 * MIN)])
    assert db.prune(200) == 0  # 201 rows: within the slack
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in range(206, 208)])
    assert db.prune(200) == 3  # 203 may be stored: trimmed to 200
    assert min(t for _, t in stored(backend)) == T0 + 8 * MIN
    assert count_rows(backend, "candles") == 200


def test_prune_walks_a_bounded_number_of_series_per_round(
    backend: Backend, db: WriteConnection
) -> None:
    """A walk costs a scan of the kept rows: a round takes WALKS_PER_ROUND series, and the
    others, still due, the next round without being written again."""
    symbols = [f"S{n:02d}USDT" for n in range(WALKS_PER_ROUND + 5)]
    db.write([candle(s, T0 + i * MIN) for s in symbols for i in range(4)])
    assert db.prune(3) == WALKS_PER_ROUND
    assert db.prune(3) == 5
    assert db.prune(3) == 0
    assert count_rows(backend, "candles") == 3 * len(symbols)


def test_wipe_empties_and_writes_go_on(backend: Backend, db: WriteConnection) -> None:
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in range(5)])
    db.write_job([], "job-1", 1, '{"id": "job-1"}')
    db.wipe()
    assert stored(backend) == {}
    assert count_rows(backend, "series") == 0 and count_rows(backend, "runs") == 0
    assert db.load_jobs() == []  # a job's progress says what is stored: gone with it
    db.write([candle("BTCUSDT", T0, "9")])
    assert closes(backend) == {("BTCUSDT", T0): "9"}
    assert db.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == [(T0, T0)]


def test_analyze_after_a_bulk_load_changes_no_row(backend: Backend, db: WriteConnection) -> None:
    db.write([candle("BTCUSDT", T0 + i * MIN) for i in range(50)])
    before = stored(backend)
    db.analyze()
    assert stored(backend) == before
    db.write([candle("BTCUSDT", T0 + 50 * MIN)])
    assert len(stored(backend)) == 51


def test_jobs_saved_with_their_candles(backend: Backend, db: WriteConnection) -> None:
    assert db.write_job([candle("BTCUSDT", T0)], "b", 20, '{"v": 1}') == 1
    db.write_job([], "a", 10, '{"a": 1}')
    db.write_job([candle("BTCUSDT", T0 + MIN)], "b", 20, '{"v": 2}')
    assert db.load_jobs() == ['{"a": 1}', '{"v": 2}']
    assert set(closes(backend)) == {("BTCUSDT", T0), ("BTCUSDT", T0 + MIN)}
    db.delete_job("a")
    db.delete_job("missing")
    assert db.load_jobs() == ['{"v": 2}']


# -- concurrency --------------------------------------------------------------------------------


def test_two_writers_overlapping_batches_concurrently(backend: Backend) -> None:
    """Two connections (two collectors) write the same series in overlapping sorted batches
    from two threads: no deadlock, no duplicate, nothing regressed, runs exact."""
    backend.prepare()
    symbols = [f"S{i:02d}USDT" for i in range(12)]
    rounds, per_batch = 30, 10
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def collector(offset: int, conn: WriteConnection) -> None:
        try:
            start.wait()
            for r in range(rounds):
                t = T0 + (r + offset) * MIN
                batch = [candle(s, t + i * MIN, f"{r}.{i}", closed=(r + i) % 3 != 0)
                         for s in symbols for i in range(per_batch)]  # fmt: skip
                if offset:
                    batch.reverse()  # each connection sorts; the order given must not matter
                conn.write(batch)
                conn.write([candle(s, t, "9.9") for s in symbols])
        except BaseException as exc:
            errors.append(exc)

    conns = [backend.open_writer(busy_timeout_ms=30_000) for _ in range(2)]
    threads = [threading.Thread(target=collector, args=(n, conns[n])) for n in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    for conn in conns:
        conn.close()
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    rows = stored(backend)
    last = T0 + (rounds + per_batch - 1) * MIN
    expected = {(s, t) for s in symbols for t in range(T0, last + 1, MIN)}
    assert set(rows) == expected
    assert count_rows(backend, "candles") == len(expected)
    assert count_rows(backend, "series") == len(symbols)
    # every open time up to the last round's start was written closed ("9.9") by someone
    last_round = T0 + rounds * MIN
    assert all(rows[(s, t)][7] for s in symbols for t in range(T0, last_round + 1, MIN))
    check = backend.open_writer(busy_timeout_ms=5000)
    try:
        for s in symbols:
            closed = sorted(t for (sym, t), row in rows.items() if sym == s and row[7])
            assert check.closed_runs(EX, s, "1m", 0, 2**62) == _runs(closed), s
    finally:
        check.close()


def test_two_writers_adjacent_blocks_keep_runs_whole(backend: Backend) -> None:
    """Two writers store disjoint but adjacent blocks of the same series at once (no candle
    in common to make them wait for each other): the runs must still end up merged into one
    per series, as if the blocks had been written one after the other."""
    backend.prepare()
    symbols = [f"S{i:02d}USDT" for i in range(8)]
    blocks, size = 40, 3
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def collector(parity: int, conn: WriteConnection) -> None:
        try:
            start.wait()
            for b in range(parity, blocks, 2):
                conn.write([candle(s, T0 + (b * size + i) * MIN) for s in symbols
                            for i in range(size)])  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    conns = [backend.open_writer(busy_timeout_ms=30_000) for _ in range(2)]
    threads = [threading.Thread(target=collector, args=(n, conns[n])) for n in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    try:
        assert errors == []
        last = T0 + (blocks * size - 1) * MIN
        for s in symbols:
            assert conns[0].closed_runs(EX, s, "1m", 0, 2**62) == [(T0, last)], s
        assert count_rows(backend, "runs") == len(symbols)
    finally:
        for conn in conns:
            conn.close()


def _runs(times: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for t in times:
        if out and t == out[-1][1] + MIN:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def test_series_wiped_by_another_connection_are_made_again(backend: Backend) -> None:
    """A wipe from another node deletes series this connection has seen: its next write
    must create them again, not write candles no series row names."""
    if backend.kind == "sqlite":
        pytest.skip("a SQLite file has one writer; the wipe goes through it")
    backend.prepare()
    a, b = (backend.open_writer(busy_timeout_ms=5000) for _ in range(2))
    try:
        a.write([candle("BTCUSDT", T0)])
        b.wipe()
        a.write([candle("BTCUSDT", T0 + MIN, "7")])
        assert closes(backend) == {("BTCUSDT", T0 + MIN): "7"}
        assert count_rows(backend, "candles") == 1
        assert a.closed_runs(EX, "BTCUSDT", "1m", 0, 2**62) == [(T0 + MIN, T0 + MIN)]
    finally:
        a.close()
        b.close()


def test_pg_server_fixture_is_the_backends(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    if backend.kind != "postgresql":
        pytest.skip("PostgreSQL only")
    server: PgServer = request.getfixturevalue("pg_server")
    assert server.password not in backend.location and "***" in backend.location


async def test_backend_reader_sees_what_the_writer_committed(backend: Backend) -> None:
    """The Writer over the backend, then the backend's own reader: same candles, coverage."""
    backend.prepare()
    writer = Writer(WriterSettings(backend=backend, batch_interval_ms=10, max_records=0))
    send, recv = trio.open_memory_channel[Sequence[Candle]](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        async with send:
            for i in range(6):
                await send.send([candle("BTCUSDT", T0 + i * MIN, f"{i}.5", closed=i < 5)])
    reader = backend.open_reader()
    try:
        rows = await reader.candles(EX, "BTCUSDT", "1m", since=0)
        assert [(r.open_time, r.close, r.closed) for r in rows] == [
            (T0 + i * MIN, i + 0.5, i < 5) for i in range(6)
        ]
        (cov,) = await reader.coverage(EX)
        assert (cov.first_open_time, cov.last_open_time, cov.candles) == (T0, T0 + 4 * MIN, 5)
    finally:
        reader.close()
