"""feedd publishing to a real nats-server with JetStream: the stream equals the sim's truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio
from e2e import feedd_config
from natsserver import closed_by_subject, read_stream, running_nats

from feedd.intervals import MINUTE_MS
from feedd.publish.publisher import Publisher
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PREFIX = "feedd"
STREAM = "FEEDD_CANDLES"
#: bootstrap loads 20 minutes of history when feedd starts; at 60x speed on a loaded machine
#: that can be some sim minutes after ``start``, so the check starts 10 minutes back
HISTORY_CHECKED = 10 * MINUTE_MS


def nats_section(url: str) -> dict[str, object]:
    return {"nats": {"url": url, "subject_prefix": PREFIX, "stream": STREAM, "max_age": "1d"}}


def publisher(service: Service) -> Publisher:
    assert service.state.publisher is not None
    return service.state.publisher


async def wait_published(service: Service, sim: Simulator, end: int) -> None:
    """Wait (on commits) until every symbol's candle at ``end`` is stored and acknowledged."""
    reader = service.state.reader

    async def stored() -> bool:
        for symbol in SYMBOLS:
            last = await reader.last_closed_open_time(EX, symbol, "1m")
            if last is None or last < end:
                return False
        return True

    with service.state.writer.open_commit_listener() as commits:
        while not (await stored() and publisher(service).stats.backlog_closed == 0):
            await commits.receive()


def check_truth(sim: Simulator, messages: list, start: int, end: int) -> list[str]:
    """Closed candles in [start, end] per subject: each once, in order, equal to the truth."""
    problems = []
    by_subject = closed_by_subject(messages)
    docs = {(s, d["open_time"]): d for s, d in messages if d["closed"] and start <= d["open_time"]}
    for symbol in SYMBOLS:
        subject = f"{PREFIX}.candles.{EX}.{symbol}.1m"
        times = [t for t in by_subject.get(subject, []) if start <= t <= end]
        if times != sorted(set(times)):
            problems.append(f"{symbol}: not once each in order: {times}")
        truth = sim.truth(EX, symbol, "1m", start, end)
        if [t.open_time for t in truth] != sorted(set(times)):
            problems.append(
                f"{symbol}: {sorted(set(times))} != truth {[t.open_time for t in truth]}"
            )
        for t in truth:
            doc = docs.get((subject, t.open_time))
            if doc is None:
                continue
            got = (doc["open"], doc["high"], doc["low"], doc["close"], doc["volume"])
            want = tuple(float(v) for v in (t.open, t.high, t.low, t.close, t.volume))
            if got != want:
                problems.append(f"{symbol} {t.open_time}: {got} != {want}")
    return problems


async def test_stream_equals_truth(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, tmp_path / "a.db")
            with trio.fail_after(60):
                await sim.sleep_until_ms(start + 4 * MINUTE_MS + 500)
                await wait_published(service, sim, start + 3 * MINUTE_MS)
            stats = publisher(service).stats
            service.stop.set()
        messages = await trio.to_thread.run_sync(read_stream, server.url, STREAM)
        tail = await trio.run_process(
            [sys.executable, "-m", "feedd.feedctl", "tail", "--nats", server.url, "--since",
             "0", "--symbol", "ethusdt", "--closed", "--count", "5", "--json"],
            capture_stdout=True,
        )  # fmt: skip
    assert stats.connected and stats.last_error is None and stats.dropped_closed == 0
    # feedctl tail --nats replays the stream from the start, filtered by subject
    tailed = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    assert [(c["symbol"], c["closed"]) for c in tailed] == [("ETHUSDT", True)] * 5
    assert [c["open_time"] for c in tailed] == closed_by_subject(messages)[
        f"{PREFIX}.candles.{EX}.ETHUSDT.1m"
    ][:5]
    # bootstrap (20 minutes over REST) and the live minutes, each closed candle once
    assert check_truth(sim, messages, start - HISTORY_CHECKED, start + 3 * MINUTE_MS) == []
    assert any(not doc["closed"] for _, doc in messages)  # forming updates go out too


async def test_two_collectors_store_each_closed_candle_once(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            one: Service = await nursery.start(run_service, cfg, tmp_path / "one.db")
            two: Service = await nursery.start(run_service, cfg, tmp_path / "two.db")
            with trio.fail_after(60):
                await sim.sleep_until_ms(start + 4 * MINUTE_MS + 500)
                await wait_published(one, sim, start + 3 * MINUTE_MS)
                await wait_published(two, sim, start + 3 * MINUTE_MS)
            both = publisher(one).stats.published_closed + publisher(two).stats.published_closed
            one.stop.set()
            two.stop.set()
        messages = await trio.to_thread.run_sync(read_stream, server.url, STREAM)
    by_subject = closed_by_subject(messages)
    stored = sum(len(times) for times in by_subject.values())
    # both published (mostly) the same closed candles; the stream kept each one once
    assert both > 1.5 * stored > 0
    assert all(len(times) == len(set(times)) for times in by_subject.values())
    assert check_truth(sim, messages, start - HISTORY_CHECKED, start + 3 * MINUTE_MS) == []


async def test_broker_restart_loses_no_closed_candle(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, tmp_path / "a.db")
            with trio.fail_after(90):
                await sim.sleep_until_ms(start + MINUTE_MS + 30_000)
                await server.stop()
                # the broker stays away over two minute closes: they wait in the backlog
                await sim.sleep_until_ms(start + 3 * MINUTE_MS + 30_000)
                held = publisher(service).stats
                await server.start()
                await sim.sleep_until_ms(start + 5 * MINUTE_MS + 500)
                await wait_published(service, sim, start + 4 * MINUTE_MS)
            stats = publisher(service).stats
            writer = service.state.writer.stats
            service.stop.set()
        messages = await trio.to_thread.run_sync(read_stream, server.url, STREAM)
    assert not held.connected and held.backlog_closed >= 2 * len(SYMBOLS)
    assert held.last_error is not None
    assert stats.connected and stats.dropped_closed == 0
    assert writer.healthy and writer.dropped == 0  # ingest never noticed
    assert check_truth(sim, messages, start - HISTORY_CHECKED, start + 4 * MINUTE_MS) == []
