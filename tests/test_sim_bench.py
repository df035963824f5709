"""The simulator's benchmark mode with closed frames: every update a new row for the store."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from feedd.intervals import MINUTE_MS, floor_open
from feedd.sim import SimSettings, open_simulator
from feedd.sim.__main__ import build_parser, settings_from

BN = "binance_futures"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_closed_bench_frames_each_close_a_new_candle(clock: trio.testing.MockClock) -> None:
    settings = SimSettings(bench=True, bench_rate=1000.0, bench_closed=True)
    async with open_simulator(settings) as sim:
        url = sim.venues[BN].ws_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with trio_websocket.open_websocket_url(url) as ws:
            first_minute = floor_open("1m", sim.now_ms())
            frames = [orjson.loads(await ws.get_message())["data"]["k"] for _ in range(200)]
        log = sim.venues[BN].send_log.as_dict()
    assert all(k["x"] is True for k in frames)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        opens = [k["t"] for k in frames if k["s"] == symbol]
        # One candle after the other from the current minute on: no key repeats, no hole.
        assert opens == [first_minute + n * MINUTE_MS for n in range(len(opens))]
        assert len(opens) >= 90
    assert all((k["s"], k["t"], k["c"]) in log for k in frames)


def test_cli_bench_closed() -> None:
    settings = settings_from(build_parser().parse_args(["--bench-closed", "--rate", "2000"]))
    assert settings.bench and settings.bench_closed and settings.bench_rate == 2000
    settings = settings_from(build_parser().parse_args(["--rate", "2000"]))
    assert settings.bench and not settings.bench_closed


async def test_frames_are_logged_as_they_go_to_the_socket() -> None:
    """A client that stops reading: frames built and queued behind its full socket are not
    logged as sent (a send time taken at build would count the queue as the client's wait)."""
    settings = SimSettings(bench=True, bench_rate=0.0)
    async with open_simulator(settings) as sim:
        venue = sim.venues[BN]
        url = venue.ws_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with trio_websocket.open_websocket_url(url, message_queue_size=1) as ws:
            await ws.get_message()
            # Unpaced, the pusher queues until the socket is full and its outbox over the
            # high-water mark; then every task waits.
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            built, logged = venue.stats["bench_frames"], venue.send_log.next_index
            assert logged > 0
            # over a megabyte of frames (a few thousand) built and queued, not yet sent
            assert built - logged > 1000
