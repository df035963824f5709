"""Coverage: the runs of closed candles the writer keeps equal what the candles say, through
writes in any order, re-writes, forming updates, retention, a wipe and the upgrade of an old
database; ``GET /coverage`` and ``feedctl coverage`` report exactly the holes left."""

from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from e2e import running_feedd
from test_backfill_jobs import differences, exchanges_doc, feedd_with_jobs, finished, start_job
from test_feedctl import feedctl

from feedd.candle import Candle, Source
from feedd.intervals import DAY_MS, MINUTE_MS, floor_open, next_open
from feedd.sim.app import open_simulator
from feedd.sim.clock import DEFAULT_START_MS
from feedd.sim.settings import SimSettings
from feedd.store import coverage
from feedd.store.database import Database
from feedd.store.schema import connect_writer

EX = "binance_futures"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def candle(symbol: str, interval: str, t: int, closed: bool = True, rest: bool = False) -> Candle:
    return Candle(EX, symbol, interval, t, "1.5", "2", "1", "1.75", "3", "4.5", 7, closed,
                  Source.REST if rest else Source.WS)  # fmt: skip


def brute_force(db: Path) -> list[tuple[str, str, int, int, int, list[tuple[int, int, int]]]]:
    """Coverage computed from the candles themselves."""
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT symbol, interval, open_time FROM candles JOIN series ON series.id = candles.series"
        " WHERE flags & 1 ORDER BY exchange, symbol, interval, open_time"
    ).fetchall()
    conn.close()
    out: dict[tuple[str, str], list[int]] = {}
    for symbol, interval, t in rows:
        out.setdefault((symbol, interval), []).append(t)
    result = []
    for (symbol, interval), times in out.items():
        holes = []
        for a, b in itertools.pairwise(times):
            if b != next_open(interval, a):
                start, end = next_open(interval, a), coverage.previous_open(interval, b)
                holes.append((start, end, coverage.count(interval, start, end)))
        result.append((symbol, interval, times[0], times[-1], len(times), holes))
    return result


def runs_view(db: Path) -> list[tuple[str, str, int, int, int, list[tuple[int, int, int]]]]:
    conn = sqlite3.connect(db)
    found = coverage.read(conn, EX)
    conn.close()
    return [
        (c.symbol, c.interval, c.first_open_time, c.last_open_time, c.candles,
         [(h.start, h.end, h.candles) for h in c.missing])
        for c in found
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_runs_follow_any_writes(tmp_path: Path, seed: int) -> None:
    """Random batches of 1m, 1h and 1M candles (closed or forming, live or REST, repeated,
    in any order), with retention between some of them: the runs equal the candles."""
    rng = random.Random(seed)
    db = Database.open(tmp_path / "ohlcv.db")
    try:
        for _ in range(40):
            batch = []
            for _ in range(rng.randrange(1, 60)):
                interval = rng.choice(["1m", "1m", "1h", "1M"])
                t = T0
                for _ in range(rng.randrange(0, 300)):
                    t = next_open(interval, t)
                batch.append(
                    candle(
                        rng.choice(["BTCUSDT", "ETHUSDT"]),
                        interval,
                        t,
                        closed=rng.random() < 0.8,
                        rest=rng.random() < 0.5,
                    )
                )
            db.write(batch)
            if rng.random() < 0.2:
                db.prune(rng.randrange(100, 250))
        assert runs_view(tmp_path / "ohlcv.db") == brute_force(tmp_path / "ohlcv.db")
    finally:
        db.close()


def test_a_forming_update_never_opens_a_hole_and_a_wipe_clears(tmp_path: Path) -> None:
    path = tmp_path / "ohlcv.db"
    db = Database.open(path)
    try:
        db.write([candle("BTCUSDT", "1m", T0 + n * MINUTE_MS) for n in range(10)])
        db.write([candle("BTCUSDT", "1m", T0 + 5 * MINUTE_MS, closed=False)])  # refused
        db.write([candle("BTCUSDT", "1m", T0 + 12 * MINUTE_MS)])
        assert runs_view(path) == [
            ("BTCUSDT", "1m", T0, T0 + 12 * MINUTE_MS, 11,
             [(T0 + 10 * MINUTE_MS, T0 + 11 * MINUTE_MS, 2)]),
        ]  # fmt: skip
        db.wipe()
        assert runs_view(path) == []
    finally:
        db.close()


def test_an_old_database_is_upgraded_with_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "ohlcv.db"
    db = Database.open(path)
    times = [T0 + n * DAY_MS for n in (*range(0, 5), *range(9, 20))]
    db.write([candle("BTCUSDT", "1d", t) for t in times])
    db.close()
    conn = sqlite3.connect(path)  # as version 1 left it: no runs
    conn.execute("DROP TABLE runs")
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    connect_writer(path).close()
    assert runs_view(path) == [
        ("BTCUSDT", "1d", T0, times[-1], 16, [(T0 + 5 * DAY_MS, T0 + 8 * DAY_MS, 4)])
    ]


HOLES = [(30, 39), (200, 200), (500, 799)]


def write_with_holes(path: Path) -> None:
    db = Database.open(path)
    missing = {n for a, b in HOLES for n in range(a, b + 1)}
    db.write([candle("ETHUSDT", "1m", T0 + n * MINUTE_MS, rest=n < 100)
              for n in range(1000) if n not in missing])  # fmt: skip
    db.write([candle("ETHUSDT", "1m", T0 + 1000 * MINUTE_MS, closed=False)])
    db.close()


def expected_holes() -> list[dict[str, Any]]:
    return [
        {"start": T0 + a * MINUTE_MS, "end": T0 + b * MINUTE_MS, "candles": b - a + 1}
        for a, b in HOLES
    ]


async def test_coverage_route_and_feedctl(tmp_path: Path, capsys: Any) -> None:
    write_with_holes(tmp_path / "ohlcv.db")
    async with running_feedd(tmp_path, {EX: ["BTCUSDT"]}, bootstrap_load=5) as (
        _sim,
        service,
        client,
    ):
        answer = await client.get("/coverage", params={"exchange": EX, "symbol": "ETHUSDT"})
        assert answer.json() == {
            "series": [
                {
                    "exchange": EX, "symbol": "ETHUSDT", "interval": "1m",
                    "first_open_time": T0, "last_open_time": T0 + 999 * MINUTE_MS,
                    "candles": 1000 - 311, "missing_candles": 311, "missing": expected_holes(),
                    "sources": {"ws": 900 - 301, "rest": 100 - 10, "archive": 0},
                }
            ]
        }  # fmt: skip
        everything = (await client.get("/coverage")).json()["series"]
        assert (EX, "ETHUSDT") in {(s["exchange"], s["symbol"]) for s in everything}
        assert all("sources" not in s for s in everything)
        holes_only = (await client.get("/coverage", params={"missing_only": "true"})).json()
        eth = [s for s in holes_only["series"] if s["symbol"] == "ETHUSDT"]
        assert eth and eth[0]["missing"] == expected_holes()
        assert all(s["missing"] for s in holes_only["series"])
        bad = await client.get("/coverage", params={"missing_only": "maybe"})
        assert bad.status_code == 400 and bad.json()["field"] == "missing_only"
        unknown = await client.get("/coverage", params={"exchange": "kraken"})
        assert unknown.status_code == 404

        run = await feedctl(capsys, "--url", service.url, "coverage", EX, "ETHUSDT")
        assert run.code == 0, run.err
        assert "2024-01-01 00:30" in run.out and "(300 candles)" in run.out
        assert "sources: ws 599, rest 90" in run.out
        listed = await feedctl(capsys, "--url", service.url, "coverage", "--missing-only")
        assert listed.code == 0 and "ETHUSDT" in listed.out and "(300 candles)" in listed.out


BTC = "BTCUSDT"
START = DEFAULT_START_MS
#: holes the simulator is told to leave: inside a daily archive file, in today's REST part,
#: and in the live stream after feedd connected (first, last open time)
DAY_BEFORE = floor_open("1d", START) - 2 * DAY_MS
SIM_HOLES = (
    (DAY_BEFORE + 100 * MINUTE_MS, DAY_BEFORE + 109 * MINUTE_MS),
    (START - 300 * MINUTE_MS, START - 298 * MINUTE_MS),
    (START + 3 * MINUTE_MS, START + 4 * MINUTE_MS),
)  # fmt: skip


async def test_coverage_reports_the_holes_the_simulator_left(tmp_path: Path) -> None:
    """The simulator leaves holes (REST, archive and live alike, its truth too); a backfill
    job plus live ingest against it, and /coverage names exactly those holes."""
    settings = SimSettings(
        venues=(EX,), history_days=4, holes=tuple((BTC, a, b) for a, b in SIM_HOLES)
    )
    async with open_simulator(settings) as sim:
        venue = sim.venues[EX]
        archive = {EX: {"archive_url": venue.archive_url}}  # type: ignore[attr-defined]
        doc = exchanges_doc(sim, {EX: [BTC]}, **archive)
        async with feedd_with_jobs(tmp_path, sim, {EX: [BTC]}, exchanges=doc) as (service, client):
            since = DAY_BEFORE
            job = await start_job(
                client, exchange=EX, symbols=[BTC], interval="1m", since=since, until=START
            )
            done = await finished(service, job["id"])
            assert done["state"] == "done", done
            assert done["sources"]["archive"] > 0 and done["sources"]["rest"] > 0
            after_live_hole = SIM_HOLES[-1][1] + 2 * MINUTE_MS
            reader = service.state.reader

            with service.state.writer.open_commit_listener() as commits:
                while (await reader.last_closed_open_time(EX, BTC, "1m") or 0) < after_live_hole:
                    await commits.receive()
            answer = (await client.get("/coverage", params={"exchange": EX, "symbol": BTC})).json()
            (series,) = answer["series"]
            assert series["first_open_time"] == since
            expected = [
                {"start": a, "end": b, "candles": (b - a) // MINUTE_MS + 1} for a, b in SIM_HOLES
            ]
            assert series["missing"] == expected
            assert series["missing_candles"] == sum(h["candles"] for h in expected)
            last = series["last_open_time"]
            assert differences(sim, tmp_path / "ohlcv.db", EX, BTC, since, last) == []
            for a, b in SIM_HOLES:  # the truth says so too
                assert len(sim.truth(EX, BTC, "1m", a - MINUTE_MS, b + MINUTE_MS)) == 2
