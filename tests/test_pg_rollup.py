"""PostgreSQL's hourly rollup (``candle_hours``) against the minutes it summarises.

After every kind of write that can change an hour (late corrections of closed minutes,
forming updates after a close, holes and their healing, prune, wipe, two writers at once, the
migration of an existing database) three things must hold: every rollup row is the exact
aggregate of 60 closed minutes; every resample through the rollup equals the same resample
computed from the minutes alone; and both equal SQLite's, which resamples from the minutes.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from feedd.candle import Candle, Source
from feedd.intervals import MINUTE_MS, next_open
from feedd.store.backend import Backend, WriteConnection
from feedd.store.postgres import resample as pg_rs
from feedd.store.postgres import rollup
from feedd.store.postgres.connection import connect

pytest_plugins = ["store_backends"]

EX, SYM = "binance_futures", "BTCUSDT"
#: Monday 2024-04-29 00:00 UTC: two days before a month starts
T0 = int(dt.datetime(2024, 4, 29, tzinfo=dt.UTC).timestamp() * 1000)
INTERVALS = (*sorted(rollup.HOURLY), "30m")
#: the fresh aggregate of every whole closed hour, in the rollup's column order, as text
_TRUTH = """
SELECT a.series, a.t, (SELECT open FROM candles WHERE series = a.series AND open_time = a.first),
    a.high, a.low, (SELECT close FROM candles WHERE series = a.series AND open_time = a.last),
    a.volume, a.quote_volume, a.trades, a.any_flags
FROM (SELECT series, open_time / 3600000 * 3600000 AS t, count(*) AS n,
    bit_and(flags) AS all_flags, bit_or(flags) AS any_flags, min(open_time) AS first,
    max(open_time) AS last, max(high) AS high, min(low) AS low, sum(volume) AS volume,
    sum(quote_volume) AS quote_volume, sum(trades) AS trades
    FROM candles WHERE series IN (SELECT id FROM series WHERE "interval" = '1m')
    GROUP BY 1, 2) AS a
WHERE a.n = 60 AND a.all_flags & 1 = 1
"""


def value(rng: random.Random, whole: int) -> str:
    places = rng.choice((0, 1, 2, 3, 8))
    text = str(rng.randrange(whole))
    if places:
        text += "." + "".join(rng.choice("0123456789") for _ in range(places))
    return text


def minute(
    rng: random.Random, n: int, *, closed: bool = True, source: Source = Source.WS
) -> Candle:
    return Candle(EX, SYM, "1m", T0 + n * MINUTE_MS, value(rng, 50_000), value(rng, 60_000),
                  value(rng, 40_000), value(rng, 50_000), value(rng, 100), value(rng, 10**7),
                  None if n % 97 == 0 else rng.randrange(10_000), closed, source)  # fmt: skip


def minutes(seed: int, ns: Sequence[int], **kwargs: Any) -> list[Candle]:
    rng = random.Random(seed)
    return [minute(rng, n, **kwargs) for n in ns]


class Pair:
    """The same writes into SQLite and PostgreSQL; ``check`` compares what they read."""

    def __init__(self, sqlite: Backend, pg: Backend) -> None:
        self.backends = (sqlite, pg)
        self.writers: list[WriteConnection] = [
            b.open_writer(busy_timeout_ms=2000) for b in (sqlite, pg)
        ]
        self.dsn: str = pg.dsn  # type: ignore[attr-defined]

    def write(self, candles: Sequence[Candle]) -> None:
        for writer in self.writers:
            writer.write(candles)

    def prune(self, keep: int) -> None:
        for writer in self.writers:
            writer.prune(keep)

    def wipe(self) -> None:
        for writer in self.writers:
            writer.wipe()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def hours(self) -> list[tuple[Any, ...]]:
        with connect(self.dsn, application_name="test") as conn:
            return sorted(conn.execute("SELECT candle_hours::text FROM candle_hours").fetchall())

    def check(self, *, at_least: int = 1) -> int:
        """Rollup = truth, rollup path = minutes path = SQLite, for every hourly interval;
        returns how many hours the rollup holds (at least ``at_least``: the path was used)."""
        with connect(self.dsn, application_name="test") as conn:
            rows = sorted(r[0] for r in conn.execute("SELECT candle_hours::text FROM candle_hours"))
            truth = sorted(
                r[0] for r in conn.execute(f"SELECT ROW(t.*)::text FROM ({_TRUTH}) AS t").fetchall()
            )
            assert rows == truth
            assert len(rows) >= at_least
            series = pg_rs.series_id(conn, EX, SYM, "1m")
            for interval in INTERVALS:
                for newest in (True, False):
                    for limit in (1_000, 3):
                        via = pg_rs.query(
                            conn, EX, SYM, interval, 0, 1 << 62, newest=newest, limit=limit
                        )
                        plain = (
                            []
                            if series is None
                            else _from_minutes(conn, series, interval, newest, limit)
                        )
                        assert via == plain, (interval, newest, limit)
        for interval in INTERVALS:
            for limit in (1_000, 2):
                for since in (None, T0 + 90 * MINUTE_MS):
                    answers = [
                        trio.run(_resample, b, interval, since, limit) for b in self.backends
                    ]
                    assert answers[0] == answers[1], (interval, since, limit)
        return len(rows)


def _from_minutes(conn: Any, series: int, interval: str, newest: bool, limit: int) -> Any:
    with conn.transaction():
        return pg_rs._windows(conn, series, interval, 0, 1 << 62, newest, limit, False)


async def _resample(backend: Backend, interval: str, since: int | None, limit: int) -> Any:
    reader = backend.open_reader()
    try:
        rows = await reader.resample(EX, SYM, interval, since=since, limit=limit)
        page = await reader.resample_json(EX, SYM, interval, since=since, limit=limit)
        return rows, page
    finally:
        reader.close()


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    from store_backends import make_backend

    out = Pair(
        make_backend("sqlite", request, tmp_path), make_backend("postgresql", request, tmp_path)
    )
    yield out
    out.close()


def test_whole_hours_days_weeks_and_a_month_come_from_the_rollup(pair: Pair) -> None:
    # 2024-04-29 .. 2024-06-03: the whole of May, whole weeks and days, sources mixed
    count = 36 * 24 * 60
    rng = random.Random(1)
    sources = (Source.WS, Source.REST, Source.ARCHIVE)
    batch = [minute(rng, n, source=sources[(n // 700) % 3]) for n in range(count)]
    for i in range(0, count, 5_000):
        pair.write(batch[i : i + 5_000])
    assert pair.check() == count // 60
    month = next_open("1M", T0)
    with connect(pair.dsn, application_name="test") as conn:
        rows = pg_rs.query(conn, EX, SYM, "1M", month, month + 1, newest=False, limit=1)
    assert rows[0][0] == month and rows[0][8] is True


def test_late_corrections_of_closed_minutes_recompute_their_hour(pair: Pair) -> None:
    pair.write(minutes(1, range(4 * 60 + 7)))
    assert pair.check() == 4
    before = pair.hours()
    # a REST correction of closed minutes in hours 1 and 2, in a batch with other rows
    pair.write(minutes(2, [61, 62, 150], source=Source.REST) + minutes(3, [4 * 60 + 7]))
    after = pair.hours()
    assert after != before and len(after) == 4
    assert pair.check() == 4
    # the first minute and the last minute of an hour: open and close move
    pair.write(minutes(4, [120, 179]))
    assert pair.check() == 4


def test_forming_updates_after_a_close_change_nothing(pair: Pair) -> None:
    pair.write(minutes(1, range(3 * 60)))
    before = pair.hours()
    pair.write(minutes(5, [0, 59, 60, 61, 179], closed=False))
    assert pair.hours() == before
    assert pair.check() == 3


def test_an_hour_with_a_hole_or_a_forming_minute_is_not_whole_until_healed(pair: Pair) -> None:
    pair.write(minutes(1, [n for n in range(5 * 60) if n not in (75, 200, 250)]))
    pair.write(minutes(1, [250], closed=False))
    assert pair.check() == 2  # hours 0 and 2 (hour 4 has a forming minute)
    pair.write(minutes(6, [75]))  # the hole heals
    assert pair.check() == 3
    pair.write(minutes(7, [200], closed=False))  # a forming minute in the other hole
    assert pair.check() == 3
    pair.write(minutes(8, [200, 250]))  # both close
    assert pair.check() == 5


def test_prune_drops_the_hours_that_lose_minutes(pair: Pair) -> None:
    pair.write(minutes(1, range(6 * 60)))
    assert pair.check() == 6
    pair.prune(4 * 60 + 30)  # cuts hour 1 in the middle
    assert pair.check() == 4
    pair.write(minutes(9, range(6 * 60, 7 * 60)))
    pair.prune(2 * 60)
    assert pair.check() == 2


def test_wipe_drops_the_rollup(pair: Pair) -> None:
    pair.write(minutes(1, range(3 * 60)))
    assert pair.check() == 3
    pair.wipe()
    assert pair.check(at_least=0) == 0
    # the same open times again, other values: nothing of the old hours shows
    pair.write(minutes(2, range(2 * 60)))
    assert pair.check() == 2


def test_two_writers_on_one_series_converge(pair: Pair) -> None:
    from feedd.store.postgres.backend import PostgresBackend

    pg = pair.backends[1]
    assert isinstance(pg, PostgresBackend)
    pair.write(minutes(1, range(6 * 60)))
    others = [pg.open_writer(busy_timeout_ms=2000) for _ in range(2)]
    errors: list[BaseException] = []

    def run(writer: WriteConnection, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for round_ in range(25):
                # closed corrections over several hours, written in either order
                ns = rng.sample(range(6 * 60), 40)
                writer.write([minute(rng, n, source=Source.REST) for n in ns])
                writer.write(minutes(seed * 100 + round_, [6 * 60 + round_], closed=False))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w, i + 10)) for i, w in enumerate(others)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for writer in others:
        writer.close()
    assert not errors and not any(t.is_alive() for t in threads)
    # SQLite gets the PostgreSQL result so that the cross-check below compares like with like
    with connect(pair.dsn, application_name="test") as conn:
        stored = conn.execute(
            "SELECT open_time, open::text, high::text, low::text, close::text, volume::text,"
            " quote_volume::text, trades, flags FROM candles ORDER BY open_time"
        ).fetchall()
    pair.writers[0].write([_candle(*row) for row in stored])
    assert pair.check() == 6


def _candle(t: int, o: str, h: str, lo: str, c: str, v: str, q: str, n: Any, f: int) -> Candle:
    source = Source.REST if f & 2 else Source.ARCHIVE if f & 4 else Source.WS
    return Candle(EX, SYM, "1m", t, o, h, lo, c, v, q, n, bool(f & 1), source)


def test_the_migration_fills_the_rollup_from_stored_minutes(pair: Pair) -> None:
    pair.write(minutes(1, [n for n in range(5 * 60 + 3) if n != 130]))
    expected = pair.hours()
    assert len(expected) == 4
    with connect(pair.dsn, application_name="test") as conn:
        conn.execute("DROP TABLE candle_hours")
        conn.execute("UPDATE feedd_meta SET value = '3' WHERE key = 'schema_version'")
        conn.commit()
        # a reader of a database still at version 3 (a standby of an older feedd's) resamples
        # from the minutes
        series = pg_rs.series_id(conn, EX, SYM, "1m")
        assert series is not None
        via = pg_rs.query(conn, EX, SYM, "1h", 0, 1 << 62, newest=True, limit=100)
        assert via == _from_minutes(conn, series, "1h", True, 100) and len(via) == 6
    pair.writers[1].close()
    pair.writers[1] = pair.backends[1].open_writer(busy_timeout_ms=2000)
    assert pair.hours() == expected
    assert pair.check() == 4


def test_an_hour_that_stops_being_whole_leaves_the_rollup(pair: Pair) -> None:
    # nothing checks that a 1m open time is a whole minute: a stray one makes 61 rows
    pair.write(minutes(1, range(3 * 60)))
    assert pair.check() == 3
    rng = random.Random(2)
    pair.write([_shifted(minute(rng, 30, closed=False), 30_000)])  # forming rows count too
    assert pair.check() == 2
    pair.write([_shifted(minute(rng, 90), 30_000)])
    assert pair.check() == 1


def _shifted(c: Candle, by: int) -> Candle:
    return Candle(c.exchange, c.symbol, c.interval, c.open_time + by, c.open, c.high, c.low,
                  c.close, c.volume, c.quote_volume, c.trades, c.closed, c.source)  # fmt: skip


def test_hours_before_the_epoch_are_never_read_from_the_rollup(pair: Pair) -> None:
    # floor division differs from SQL's truncation below zero: the rollup path stays out
    start = -(T0 // MINUTE_MS) - 30 * 60  # 30 hours before a Monday before 1970
    rng = random.Random(3)
    candles = [_shifted(minute(rng, n), (start - T0 // MINUTE_MS) * MINUTE_MS)
               for n in range(30 * 60 + 30)]  # fmt: skip
    pair.writers[1].write(candles)
    with connect(pair.dsn, application_name="test") as conn:
        series = pg_rs.series_id(conn, EX, SYM, "1m")
        assert series is not None
        for interval in INTERVALS:
            via = pg_rs.query(conn, EX, SYM, interval, -(1 << 62), 1 << 62, newest=True, limit=50)
            assert via == _from_minutes_range(conn, series, interval), interval
        assert len(conn.execute("SELECT * FROM candle_hours").fetchall()) == 30


def _from_minutes_range(conn: Any, series: int, interval: str) -> Any:
    with conn.transaction():
        return pg_rs._windows(conn, series, interval, -(1 << 62), 1 << 62, True, 50, False)
