"""A cluster on one PostgreSQL (issue #15): two collectors on the same symbols and one API node,
real ``python -m feedd`` processes against the simulator. One collector is SIGKILLed ten times
at random moments (seeded) and restarted while the other keeps going; the server is stopped for
30 s mid-run and started again; feedd's connections are terminated from the server side. After
healing the database equals the simulator's truth (nothing missing, duplicated or regressed),
and the API node answered every request meanwhile, with 503 only while the server was down.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import trio
from e2e import truth_rows

from chaos.harness import (
    VENUES,
    FeeddProcess,
    config_doc,
    crash_lines,
    last_closed_minute,
    write_config,
)
from feedd.intervals import MINUTE_MS, floor_open
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

SEED = 20261203
KILLS = 10
#: the issue's figure
OUTAGE_S = 30.0
#: after the server is back, the API node's first reads may still meet a dead connection
RECOVERY_S = 5.0
PLAN = {name: ["BTCUSDT", "ETHUSDT"] for name in VENUES}
#: sim minutes of history each collector loads at start
BOOTSTRAP = 60
POLL_EVERY_S = 0.25
#: a collector's store retries back off to ~30 s after a long outage, then it heals
HEAL_S = 90.0


def node_doc(sim: Simulator, dsn: str, role: str) -> dict[str, Any]:
    doc = config_doc(sim, PLAN, bootstrap_load=BOOTSTRAP, role=role)
    del doc["database_path"]
    doc["storage"] = {"backend": "postgresql", "dsn": dsn}
    return doc


Truth = dict[tuple[str, str], dict[int, tuple[Any, ...]]]


def the_truth(sim: Simulator, start: int, end: int) -> Truth:
    """The simulator's closed candles of every series in [start, end] (in trio's thread)."""
    truth = {
        (ex, sym): truth_rows(sim, ex, sym, start, end) for ex, syms in PLAN.items() for sym in syms
    }
    for (ex, sym), rows in truth.items():
        assert len(rows) == (end - start) // MINUTE_MS + 1, f"{ex} {sym}: the window is wrong"
    return truth


def problems(truth: Truth, dsn: str, start: int, end: int) -> list[str]:
    """Differences from the truth of every closed candle in [start, end], any row there still
    forming (a closed candle lost or regressed), a series stored twice (blocking: a thread)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT s.exchange, s.symbol, c.open_time, c.open::text, c.high::text, c.low::text,"
            " c.close::text, c.volume::text, c.quote_volume::text, c.trades FROM candles c"
            " JOIN series s ON s.id = c.series WHERE s.interval = '1m' AND (c.flags & 1) = 1"
            " AND c.open_time BETWEEN %s AND %s",
            (start, end),
        ).fetchall()
        forming = conn.execute(
            "SELECT count(*) FROM candles WHERE (flags & 1) = 0 AND open_time BETWEEN %s AND %s",
            (start, end),
        ).fetchone()
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM series GROUP BY exchange, symbol, interval"
            " HAVING count(*) > 1) AS x"
        ).fetchone()
    assert forming is not None and twice is not None
    stored: Truth = {key: {} for key in truth}
    for ex, sym, t, *values in rows:
        stored.setdefault((ex, sym), {})[t] = tuple(values)
    out: list[str] = []
    for (ex, sym), want in truth.items():
        got = stored[(ex, sym)]
        out += [f"{ex} {sym} {t}: missing" for t in sorted(set(want) - set(got))]
        out += [f"{ex} {sym} {t}: not in truth" for t in sorted(set(got) - set(want))]
        out += [
            f"{ex} {sym} {t}: stored {got[t]} != {want[t]}"
            for t in sorted(set(want) & set(got))
            if got[t] != want[t]
        ]
    if forming[0]:
        out.append(f"{forming[0]} candles in the window are stored as still forming")
    if twice[0]:
        out.append(f"{twice[0]} series are stored twice")
    return out


async def heal(truth: Truth, dsn: str, start: int, end: int, within: float = HEAL_S) -> None:
    """Poll the database (another process writes it) until it equals the truth; fail with
    what still differs."""
    found: list[str] = []
    with trio.move_on_after(within):
        while True:
            found = await trio.to_thread.run_sync(problems, truth, dsn, start, end)
            if not found:
                return
            await trio.sleep(0.5)
    raise AssertionError(f"not healed after {within:g} s: {len(found)} problems: {found[:20]}")


class ApiWatch:
    """Reads through the API node every POLL_EVERY_S; records each answer and when."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: (sent, answered, status)
        self.answers: list[tuple[float, float, int]] = []
        self.failures: list[tuple[float, str]] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            while True:
                at = trio.current_time()
                try:
                    got = await client.get("/ohlcv/binance_futures/BTCUSDT/1m", params={"limit": 5})
                except httpx.HTTPError as exc:
                    self.failures.append((at, repr(exc)))
                else:
                    self.answers.append((at, trio.current_time(), got.status_code))
                await trio.sleep(POLL_EVERY_S)


async def test_two_collectors_and_an_api_node_survive_kills_and_outages(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    rng = random.Random(SEED)
    dbname = pg_dsn.rsplit("/", 1)[1]
    outage_after = rng.randrange(3, 7)  # the outage comes after this many kills
    terminate_after = {rng.randrange(1, 3), rng.randrange(7, KILLS)}
    kills = 0
    down: tuple[float, float] | None = None
    terminated = 0
    async with open_simulator(SimSettings(venues=VENUES)) as sim:
        nodes = {
            name: FeeddProcess(
                write_config(tmp_path / f"{name}.json", node_doc(sim, pg_dsn, role)),
                tmp_path / f"{name}.log",
            )
            for name, role in (("a", "collector"), ("b", "collector"), ("api", "api"))
        }
        try:
            with trio.fail_after(400):
                for node in nodes.values():
                    await node.start()
                    if node is nodes["a"]:
                        # a's bootstrap began before this: it holds BOOTSTRAP minutes back
                        # from then, so the window's start is safe while a started in < 30 s.
                        start = floor_open("1m", sim.now_ms()) - (BOOTSTRAP - 30) * MINUTE_MS
                watch = ApiWatch(nodes["api"].url)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch.run)
                    victim = nodes["b"]
                    for n in range(KILLS):
                        await trio.sleep(rng.uniform(0.3, 2.0))  # the random moment
                        assert victim.alive, f"kill {n}: collector b exited by itself"
                        assert await victim.kill() == -signal.SIGKILL
                        kills += 1
                        await trio.sleep(rng.uniform(0.0, 0.6))  # downtime
                        if n + 1 in terminate_after:
                            terminated += await trio.to_thread.run_sync(pg_server.terminate, dbname)
                        if n + 1 == outage_after:
                            stopped_at = trio.current_time()
                            await trio.to_thread.run_sync(pg_server.stop)
                            await trio.sleep(OUTAGE_S)
                            await trio.to_thread.run_sync(pg_server.start)
                            down = (stopped_at, trio.current_time())
                        await victim.start()
                    assert nodes["a"].alive and nodes["api"].alive
                    # Every hole the kills and the outage left must be healed (by the live
                    # collector's held candles, the restarted one's bootstrap and heals).
                    end = last_closed_minute(sim, 2)
                    truth = the_truth(sim, start, end)
                    await heal(truth, pg_dsn, start, end)
                    nursery.cancel_scope.cancel()
                for name, node in nodes.items():
                    assert await node.stop() == 0, name
        finally:
            for node in nodes.values():
                await node.aclose()
        assert problems(truth, pg_dsn, start, end) == []
    assert kills == KILLS and terminated > 0 and down is not None
    for name, node in nodes.items():
        assert crash_lines(node.log_text()) == [], name
    # The API node answered throughout: every request had an answer, 503 only while the
    # server was down (and the moments its connections took to come back), 200 otherwise.
    assert watch.failures == []
    late = down[1] + RECOVERY_S
    wrong = [
        (sent, status)
        for sent, answered, status in watch.answers
        if status != 200 and not (status == 503 and answered >= down[0] and sent <= late)
    ]
    assert wrong == [], (down, wrong[:10])
    assert any(s == 503 for t, _, s in watch.answers if down[0] <= t <= down[1]), (
        "no 503 while down"
    )
    assert sum(s == 200 for t, _, s in watch.answers if t > late) > 10
