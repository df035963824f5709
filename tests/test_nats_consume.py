"""Reading candles back from NATS: an API node's /ws fed by another process's collector, a
consumer that stops reading, and ``feedctl tail --nats``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import orjson
import trio
import trio_websocket
from e2e import feedd_config, wait_on_commits
from natsserver import running_nats
from test_nats_publish import (
    EX,
    HISTORY_CHECKED,
    STREAM,
    SYMBOLS,
    check_truth,
    nats_section,
    publisher,
    wait_published,
)

from feedd import config
from feedd.intervals import MINUTE_MS
from feedd.publish.consumer import consume, feed_live_hub
from feedd.service import Service, run_service
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings


def nats_settings(url: str) -> config.NatsConfig:
    publish = config.parse({"publish": nats_section(url)}).config.publish
    assert publish is not None and publish.nats is not None
    return publish.nats


async def test_api_node_ws_serves_candles_another_process_ingested(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        collector_cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        # the API node collects nothing itself
        api_cfg = config.parse({"exchanges": {EX: {"enabled": False}}, "port": 0}).config
        async with trio.open_nursery() as nursery:
            api: Service = await nursery.start(run_service, api_cfg, tmp_path / "api.db")
            feeder = trio.CancelScope()

            async def run_feeder(*, task_status: trio.TaskStatus[None]) -> None:
                with feeder:
                    settings = nats_settings(server.url)
                    await feed_live_hub(api.state.hub, settings, task_status=task_status)

            await nursery.start(run_feeder)
            host, port = api.url.removeprefix("http://").rsplit(":", 1)
            async with trio_websocket.open_websocket(host, int(port), "/ws", use_ssl=False) as ws:
                await ws.send_message('{"op":"subscribe","topic":"candles","interval":"1m"}')
                collector: Service = await nursery.start(
                    run_service, collector_cfg, tmp_path / "collector.db"
                )
                closed: dict[str, dict[str, Any]] = {}
                with trio.fail_after(60):
                    while len(closed) < len(SYMBOLS):
                        doc = orjson.loads(await ws.get_message())
                        for candle in doc["data"] if doc["type"] == "candles" else []:
                            if candle["closed"] and candle["source"] == "ws":
                                closed[candle["symbol"]] = candle
            collector.stop.set()
            api.stop.set()
            feeder.cancel()  # feed_live_hub runs until cancelled
    for symbol, candle in closed.items():
        assert candle["exchange"] == EX
        (truth,) = sim.truth(EX, symbol, "1m", candle["open_time"], candle["open_time"])
        assert candle["close"] == float(truth.close) and candle["volume"] == float(truth.volume)


async def test_an_api_node_feeds_its_ws_from_nats_by_itself(tmp_path: Path) -> None:
    """role api + publish.nats: the service starts feed_live_hub (and publishes nothing)."""
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        collector_cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        api_doc = {"role": "api", "port": 0, "publish": nats_section(server.url)}
        api_cfg = config.parse(api_doc).config
        async with trio.open_nursery() as nursery:
            api: Service = await nursery.start(run_service, api_cfg, tmp_path / "api.db")
            host, port = api.url.removeprefix("http://").rsplit(":", 1)
            async with trio_websocket.open_websocket(host, int(port), "/ws", use_ssl=False) as ws:
                await ws.send_message('{"op":"subscribe","topic":"candles"}')
                collector: Service = await nursery.start(
                    run_service, collector_cfg, tmp_path / "collector.db"
                )
                with trio.fail_after(60):
                    while True:
                        doc = orjson.loads(await ws.get_message())
                        if doc["type"] == "candles" and any(c["closed"] for c in doc["data"]):
                            break
            collector.stop.set()
            api.stop.set()
    assert api.state.publisher is None
    closed = next(c for c in doc["data"] if c["closed"])
    (truth,) = sim.truth(EX, closed["symbol"], "1m", closed["open_time"], closed["open_time"])
    assert closed["close"] == float(truth.close)


def stalled_consumer(url: str, started: threading.Event, stop: threading.Event) -> int:
    """A JetStream consumer whose application never reads: returns what it had buffered."""

    async def main() -> int:
        import nats

        nc = await nats.connect(url, error_cb=_ignore)
        js = nc.jetstream()
        sub = await js.subscribe(">", stream=STREAM, pending_msgs_limit=50)
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        pending = sub.pending_msgs
        await nc.close()
        return pending

    return asyncio.run(main())


async def _ignore(exc: Exception) -> None:
    pass


async def test_a_consumer_that_stops_reading_slows_nothing(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server, open_simulator(SimSettings(venues=(EX,))) as sim:
        cfg = feedd_config(sim, {EX: SYMBOLS}, publish=nats_section(server.url))
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        received: list[tuple[str, dict[str, Any]]] = []
        started, stop = threading.Event(), threading.Event()
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, tmp_path / "a.db")
            # the stalled one subscribes first and never reads ...
            stalled_pending: list[int] = []

            async def run_stalled() -> None:
                stalled_pending.append(
                    await trio.to_thread.run_sync(stalled_consumer, server.url, started, stop)
                )

            nursery.start_soon(run_stalled)
            await trio.to_thread.run_sync(started.wait)
            # ... while another one replays everything from the start and follows
            ready = threading.Event()

            def follow() -> None:
                async def main() -> None:
                    task = asyncio.ensure_future(
                        consume(
                            nats_settings(server.url),
                            lambda s, d: received.append((s, d)),
                            since_ms=0,
                            subscribed=ready.set,
                        )
                    )
                    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
                    task.cancel()

                asyncio.run(main())

            nursery.start_soon(trio.to_thread.run_sync, follow)
            with trio.fail_after(60):
                await sim.sleep_until_ms(start + 4 * MINUTE_MS + 500)
                await wait_published(service, sim, start + 3 * MINUTE_MS)
                stats = publisher(service).stats
                # the follower's thread fills ``received``: wait on commits, not sleeps
                await wait_on_commits(
                    service,
                    lambda: sum(1 for _, d in received if d["closed"]) >= stats.published_closed,
                )
            writer = service.state.writer.stats
            stop.set()
            service.stop.set()
    assert stalled_pending and stalled_pending[0] <= 50  # it read nothing and buffered little
    assert stats.backlog_closed == 0 and stats.dropped_closed == 0 and stats.connected
    assert writer.healthy
    assert check_truth(sim, received, start - HISTORY_CHECKED, start + 3 * MINUTE_MS) == []
