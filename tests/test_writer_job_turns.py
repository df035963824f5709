"""Job turns: a job's work (slices it stores, pages it parses) runs between two ticks of the
writer's commit loop, at most a turn's worth each (counted, never timed)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing

from feedd import exchanges
from feedd.candle import Candle, Source
from feedd.engine.rest import RestClient
from feedd.engine.stats import ExchangeStats
from feedd.intervals import MINUTE_MS, floor_open
from feedd.jobs.model import DONE, Job, SymbolJob
from feedd.jobs.runner import JobRunner
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.database import Database
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import JOB_SLICE, JOB_TURN_ROWS, Writer, WriterSettings

T0 = 1_700_000_040_000
#: (what, rows, the writer's tick count when it ran)
Event = tuple[str, int, Any]


def candle(i: int, symbol: str) -> Candle:
    return Candle("binance_futures", symbol, "1m", T0 + i * 60_000, "1.0", "2.0", "0.5", "1.5",
                  "10", "15", None, True, Source.WS)  # fmt: skip


class Recording(SqliteBackend):
    """Records each write (live: BTCUSDT; job: any other symbol) with the writer's tick count:
    a live write's as it runs, a job's of the tick that opened the turn it was granted in.

    A job's work runs in a worker thread while the loop goes on: a tick with nothing to
    commit can open the next turn meanwhile, so the count read as the work runs could already
    be the next turn's (this test failed so, once in many runs)."""

    def __init__(self, path: Path, events: list[Event]) -> None:
        super().__init__(path)
        self.events = events
        self.writer: Writer | None = None
        #: the writer's tick count when it last granted job work a turn
        self.granted: Any = None

    def ticks(self) -> Any:
        # Before job turns the writer counted no ticks: everything is one span.
        return getattr(self.writer, "ticks", None)

    def open_writer(self, *, busy_timeout_ms: int) -> Database:
        db = super().open_writer(busy_timeout_ms=busy_timeout_ms)
        write, write_job = db.write, db.write_job

        def recorded_write(candles: Sequence[Candle]) -> int:
            if all(c.symbol == "BTCUSDT" for c in candles):
                self.events.append(("live", len(candles), self.ticks()))
            else:
                self.events.append(("store", len(candles), self.granted))
            return write(candles)

        def recorded_job(candles: Sequence[Candle], *args: Any) -> int:
            self.events.append(("store", len(candles), self.granted))
            return write_job(candles, *args)

        db.write, db.write_job = recorded_write, recorded_job  # type: ignore[method-assign]
        return db


def writer_for(tmp_path: Path, events: list[Event]) -> Writer:
    backend = Recording(tmp_path / "w.db", events)
    writer = Writer(WriterSettings(backend=backend, batch_interval_ms=50, max_records=0))
    backend.writer = writer
    grant = writer.job_turn

    async def recorded_turn(rows: int) -> None:
        await grant(rows)
        backend.granted = backend.ticks()

    writer.job_turn = recorded_turn  # type: ignore[method-assign]
    return writer


def turns(events: list[Event]) -> list[list[Event]]:
    """The job's events grouped by the tick they ran after (live commits left out)."""
    job = [e for e in events if e[0] != "live"]
    return [list(group) for _, group in itertools.groupby(job, key=lambda e: e[2])]


async def test_job_rows_between_two_ticks_stay_within_a_turn(tmp_path: Path) -> None:
    """A job's 3,000 rows go a turn at a time while live candles flow: never more than
    JOB_TURN_ROWS between two ticks (so a live candle waits behind one turn at most).

    On the real clock: with the autojump clock, time jumped whenever the writer's thread ran
    (every task waits then), so a turn was nearly always past its end by the time the job
    looked, and the test took from seconds to ten minutes."""
    events: list[Event] = []
    writer = writer_for(tmp_path, events)
    send, recv = trio.open_memory_channel[Sequence[Candle]](100)
    job = [candle(i, "ETHUSDT") for i in range(12 * JOB_SLICE)]

    async def live() -> None:
        for i in itertools.count():
            await send.send([candle(i, "BTCUSDT")])
            await trio.sleep(0.007)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        nursery.start_soon(live)
        await trio.sleep(0.2)
        await writer.write_job(job, "j1", 1, '{"id": "j1"}')
        nursery.cancel_scope.cancel()
    spans = turns(events)
    assert sum(n for _, n, _ in itertools.chain(*spans)) == len(job)
    assert all(sum(n for _, n, _ in span) <= JOB_TURN_ROWS for span in spans), spans
    assert any(e[0] == "live" for e in events)


async def test_pages_are_parsed_in_turns_of_their_own(tmp_path: Path) -> None:
    """A job's page is parsed (in a worker thread) only once the writer gave it a turn, which
    it shares with nothing else of the job; its rows are stored in turns after it."""
    events: list[Event] = []
    writer = writer_for(tmp_path, events)
    backend = writer.settings.backend
    assert isinstance(backend, Recording)
    module = exchanges.get("binance_futures")
    loop_thread = threading.get_ident()

    class Recorded:
        """The venue's module, recording each page it parses off the event loop."""

        def __getattr__(self, name: str) -> Any:
            return getattr(module, name)

        def parse_klines(self, *args: Any) -> list[Candle]:
            candles = module.parse_klines(*args)
            if threading.get_ident() != loop_thread:
                events.append(("parse", len(candles), backend.granted))
            return candles

    settings = SimSettings(venues=("binance_futures",), history_days=3)
    send, recv = trio.open_memory_channel[Sequence[Candle]](10)
    with trio.fail_after(60):
        async with (
            open_simulator(settings) as sim,
            httpx.AsyncClient() as http,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(writer.run, recv)
            venue = sim.venues["binance_futures"]
            rest = RestClient(
                module,
                venue.rest_url,
                http,
                ExchangeStats("binance_futures"),
                logging.getLogger("test"),
                background=True,
            )
            now = sim.now_ms()
            job = Job(
                id="j1",
                exchange="binance_futures",
                interval="1m",
                since=floor_open("1m", now) - 2 * 1440 * MINUTE_MS,
                until=now,
                end=floor_open("1m", now) - 2 * MINUTE_MS,
                symbols=[SymbolJob("BTCUSDT")],
                created_at=1,
            )

            async def save(job: Job, candles: Sequence[Candle], source: str) -> None:
                await writer.write_job(candles, job.id, job.created_at, "{}")

            runner = JobRunner(job, Recorded(), lambda: rest, writer, save)  # type: ignore[arg-type]
            await runner.run()
            assert job.state == DONE
            await send.aclose()
    parsed = [e for e in events if e[0] == "parse"]
    assert sum(n for _, n, _ in parsed) >= 2 * 1440 - 2 and len(parsed) >= 2
    for span in turns(events):
        if any(e[0] == "parse" for e in span):
            assert len(span) == 1, span
        else:
            assert sum(n for _, n, _ in span) <= JOB_TURN_ROWS, span
