"""/ws forming updates: sent as the writer takes them in (``"committed": false``), closed
candles only after their commit (``"committed": true``), and never a forming update of a
minute already closed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import trio
import trio_websocket
from e2e import running_feedd

from feedd.candle import Candle, Source
from feedd.feedctl import main
from feedd.monitor.logring import LogRing
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings
from feedd.web.filters import CandleFilter
from feedd.web.live import (
    BEHIND_LIMIT_S,
    FORMING_BACKLOG,
    FORMING_EVERY_S,
    FORMING_SENDS_PER_S,
    Client,
    LiveHub,
)

BINANCE = "binance_futures"
T0, T1 = 60_000 * 1000, 60_000 * 1001
#: no commit before shutdown unless the test makes one
NEVER_MS = 60_000


def update(
    open_time: int, close: str, *, closed: bool = False, source: Source = Source.WS
) -> Candle:
    return Candle(
        BINANCE, "BTCUSDT", "1m", open_time, "1", "9", "0.5", close, "3", "4.5", 7, closed, source
    )


def subscribed_client(hub: LiveHub) -> Client:
    client = Client()
    hub.add(client)
    hub.filters.add(client, [CandleFilter()])
    return client


async def next_candles(client: Client) -> list[dict[str, Any]]:
    with trio.fail_after(10):
        (text,) = await client.next_messages()
    message = orjson.loads(text)
    assert message["type"] == "candles"
    return message["data"]  # type: ignore[no-any-return]


def brief(data: Sequence[dict[str, Any]]) -> list[tuple[int, float, bool, bool]]:
    return [(c["open_time"], c["close"], c["closed"], c["committed"]) for c in data]


def nothing_queued(client: Client) -> bool:
    return client.outbox_recv.statistics().current_buffer_used == 0


async def test_forming_before_the_commit_closed_after_it(tmp_path: Path) -> None:
    writer = Writer(WriterSettings(SqliteBackend(tmp_path / "ohlcv.db"), NEVER_MS, 1000))
    hub = LiveHub(writer, LogRing(), dict)
    client = subscribed_client(hub)
    candles_send, candles_recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, candles_recv)
        await nursery.start(hub.run)

        await candles_send.send([update(T0, "1.5")])
        assert brief(await next_candles(client)) == [(T0, 1.5, False, False)]
        # The minute closes and the next one forms: only the forming one goes out now.
        await candles_send.send([update(T0, "1.6", closed=True), update(T1, "1.7")])
        assert brief(await next_candles(client)) == [(T1, 1.7, False, False)]
        # A late forming update of the closed minute is dropped, however it arrives.
        await candles_send.send([update(T0, "1.4"), update(T1, "1.8")])
        assert brief(await next_candles(client)) == [(T1, 1.8, False, False)]
        assert writer.stats.batches == 0 and writer.stats.received == 5

        # Ending ingest makes the writer commit what it holds: the closed minute goes out,
        # committed; the forming updates already sent are not sent again.
        await candles_send.aclose()
        assert brief(await next_candles(client)) == [(T0, 1.6, True, True)]
        assert writer.stats.batches == 1
        assert nothing_queued(client)
        nursery.cancel_scope.cancel()


async def test_forming_update_after_a_committed_close_is_dropped() -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]  # publish only, no run
    client = subscribed_client(hub)
    hub.publish([update(T0, "1.6", closed=True), update(T1, "1.7")])
    assert brief(await next_candles(client)) == [(T0, 1.6, True, True)]
    # The ingest path lagging behind the commit path: its forming T0 is older than what the
    # client already has.
    hub.publish_ingested([update(T0, "1.5"), update(T1, "1.8")])
    assert brief(await next_candles(client)) == [(T1, 1.8, False, False)]
    # A close learnt from backfill (never pushed itself) retires the live minute too.
    hub.publish([update(T1, "1.9", closed=True, source=Source.REST)])
    hub.publish_ingested([update(T1, "2.0")])
    assert nothing_queued(client)


async def test_queued_forming_updates_of_one_candle_go_out_as_the_newest() -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    client = subscribed_client(hub)
    other = msgspec.structs.replace(update(T0, "5"), symbol="ETHUSDT")
    hub.publish_ingested([update(T0, "1.5"), other, update(T0, "1.6"), update(T1, "1.7")])
    data = await next_candles(client)
    assert [(c["symbol"], c["open_time"], c["close"]) for c in data] == [
        ("BTCUSDT", T0, 1.6),
        ("ETHUSDT", T0, 5.0),
        ("BTCUSDT", T1, 1.7),
    ]


async def test_forming_messages_at_most_one_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    client = subscribed_client(hub)
    ingested_send, ingested_recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run_ingested, ingested_recv)
        start = trio.current_time()
        await ingested_send.send([update(T0, "1.1")])
        assert brief(await next_candles(client)) == [(T0, 1.1, False, False)]
        assert trio.current_time() == start  # the first goes at once
        await ingested_send.send([update(T0, "1.2")])
        await ingested_send.send([update(T1, "1.3")])
        # the next ones wait for the interval, and go out together
        assert brief(await next_candles(client)) == [
            (T0, 1.2, False, False),
            (T1, 1.3, False, False),
        ]
        assert trio.current_time() == pytest.approx(start + FORMING_EVERY_S)
        await trio.sleep(1)
        quiet = trio.current_time()
        await ingested_send.send([update(T1, "1.4")])
        assert brief(await next_candles(client)) == [(T1, 1.4, False, False)]
        assert trio.current_time() == quiet  # after a quiet spell, at once again
        nursery.cancel_scope.cancel()


async def test_with_many_clients_forming_messages_go_out_less_often(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    clients = [subscribed_client(hub) for _ in range(10)]
    ingested_send, ingested_recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run_ingested, ingested_recv)
        start = trio.current_time()
        await ingested_send.send([update(T0, "1.1")])
        for client in clients:
            assert brief(await next_candles(client)) == [(T0, 1.1, False, False)]
        await ingested_send.send([update(T0, "1.2")])
        for client in clients:
            assert brief(await next_candles(client)) == [(T0, 1.2, False, False)]
        assert 10 / FORMING_SENDS_PER_S > FORMING_EVERY_S
        assert trio.current_time() == pytest.approx(start + 10 / FORMING_SENDS_PER_S)
        nursery.cancel_scope.cancel()


async def test_a_loop_short_of_cpu_gets_fewer_forming_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    client = subscribed_client(hub)
    ingested_send, ingested_recv = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run_ingested, ingested_recv)
        start = trio.current_time()
        await ingested_send.send([update(T0, "1.1")])
        await next_candles(client)
        await ingested_send.send([update(T0, "1.2")])
        await trio.testing.wait_all_tasks_blocked()  # the hub waits for its interval
        autojump_clock.jump(0.01)  # a busy loop: the hub wakes 8 ms late
        assert brief(await next_candles(client)) == [(T0, 1.2, False, False)]
        assert trio.current_time() == pytest.approx(start + 0.01)
        await ingested_send.send([update(T0, "1.3")])
        await next_candles(client)
        assert trio.current_time() == pytest.approx(start + 0.01 + 2 * FORMING_EVERY_S)
        await ingested_send.send([update(T0, "1.4")])
        await next_candles(client)  # on time again: back to the shortest interval
        assert trio.current_time() == pytest.approx(start + 0.01 + 3 * FORMING_EVERY_S)
        nursery.cancel_scope.cancel()


async def test_a_client_behind_skips_forming_updates_never_closed_ones() -> None:
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    client = subscribed_client(hub)
    for n in range(FORMING_BACKLOG + 5):
        hub.publish_ingested([update(60_000 * n, "1.5")])
    queued = client.outbox_recv.statistics
    assert queued().current_buffer_used == FORMING_BACKLOG and client.skipped == 5
    hub.publish([update(0, "1.6", closed=True)])
    assert queued().current_buffer_used == FORMING_BACKLOG + 1
    assert not client.overflowed.is_set()
    messages = [orjson.loads(text) for text in await client.next_messages()]
    assert [c["open_time"] for m in messages for c in m["data"]] == [
        *(60_000 * n for n in range(FORMING_BACKLOG)),
        0,
    ]


async def test_a_client_behind_for_too_long_is_cut_off(autojump_clock: object) -> None:
    """Skipping forming updates alone let a client that reads nothing keep its socket for
    minutes (only the odd closed candle filled its outbox): one behind for BEHIND_LIMIT_S is
    cut like an overflowing one. One that catches up in time is not."""
    hub = LiveHub(None, LogRing(), dict)  # type: ignore[arg-type]
    reader, silent = subscribed_client(hub), subscribed_client(hub)
    for n in range(FORMING_BACKLOG):
        hub.publish_ingested([update(60_000 * n, "1.5")])
    await trio.sleep(BEHIND_LIMIT_S - 1)
    hub.publish_ingested([update(0, "1.6")])
    await reader.next_messages()  # it reads: no longer behind
    await trio.sleep(2)
    hub.publish_ingested([update(0, "1.7")])
    assert silent.overflowed.is_set() and not reader.overflowed.is_set()


async def test_ws_client_gets_forming_updates_before_any_commit(tmp_path: Path) -> None:
    async with running_feedd(
        tmp_path, {BINANCE: ["BTCUSDT"]}, batch_interval=NEVER_MS, bootstrap_load=0
    ) as (_sim, service, _client):
        writer = service.state.writer
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        async with trio_websocket.open_websocket(host, int(port), "/ws", use_ssl=False) as ws:
            await ws.send_message('{"op":"subscribe","topic":"candles"}')
            seen: set[int] = set()
            with trio.fail_after(20):
                # Two minutes forming means one closed meanwhile: it still waits for its commit.
                while len(seen) < 2:
                    message = orjson.loads(await ws.get_message())
                    if message["type"] != "candles":
                        continue
                    assert writer.stats.batches == 0
                    for candle in message["data"]:
                        assert (candle["closed"], candle["committed"]) == (False, False)
                        assert candle["symbol"] == "BTCUSDT" and candle["source"] == "ws"
                        seen.add(candle["open_time"])
            assert writer.stats.batches == 0


async def feedctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await trio.to_thread.run_sync(lambda: main(list(argv)), abandon_on_cancel=True)
    return code, capsys.readouterr().out


async def test_tail_prints_forming_updates_and_closed_ones_once_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEEDD_URL", raising=False)
    monkeypatch.delenv("FEEDD_TOKEN", raising=False)
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}, bootstrap_load=0) as (
        _sim,
        service,
        _client,
    ):
        with trio.fail_after(30):
            table = await feedctl(capsys, "--url", service.url, "tail", "--count", "2")
            closed = await feedctl(
                capsys, "--url", service.url, "tail", "--json", "--closed", "--count", "2"
            )
    assert table[0] == 0 and len(table[1].splitlines()) == 3
    assert closed[0] == 0
    candles = [json.loads(line) for line in closed[1].splitlines()]
    assert [(c["closed"], c["committed"]) for c in candles] == [(True, True)] * 2
