"""/ws: subscriptions and filters against live ingest, status and logs topics, bad requests,
and the slow-client rule (a full outbox closes that client with 1008, nobody else)."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import trio
import trio_websocket
from e2e import running_feedd

from feedd.candle import Candle, Source
from feedd.monitor.logring import LogRing
from feedd.web.filters import CandleFilter
from feedd.web.live import Client, LiveHub, coalesce

BINANCE, BYBIT = "binance_futures", "bybit_futures"


async def next_of(ws: trio_websocket.WebSocketConnection, kind: str) -> dict[str, Any]:
    while True:
        message = orjson.loads(await ws.get_message())
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


def ws_endpoint(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_candles_status_and_logs_topics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    symbols = {BINANCE: ["BTCUSDT", "ETHUSDT"], BYBIT: ["BTCUSDT"]}
    async with running_feedd(tmp_path, symbols) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with (
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as everything,
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as filtered,
        ):
            await everything.send_message('{"op":"subscribe","topic":"candles"}')
            assert await next_of(everything, "subscribed") == {
                "type": "subscribed",
                "topic": "candles",
            }
            await filtered.send_message(
                '{"op":"subscribe","topic":"candles","exchange":"bybit_futures",'
                '"symbol":"BTCUSDT","interval":"1m"}'
            )
            await next_of(filtered, "subscribed")
            with trio.fail_after(20):
                seen: set[tuple[str, str]] = set()
                while len(seen) < 3:
                    batch = await next_of(everything, "candles")
                    for candle in batch["data"]:
                        assert candle["source"] == "ws" and candle["close"] > 0
                        seen.add((candle["exchange"], candle["symbol"]))
                for _ in range(5):
                    batch = await next_of(filtered, "candles")
                    assert {(c["exchange"], c["symbol"]) for c in batch["data"]} == {
                        (BYBIT, "BTCUSDT")
                    }

                # status every second, logs from a sequence number
                await filtered.send_message('{"op":"unsubscribe","topic":"candles"}')
                await filtered.send_message('{"op":"subscribe","topic":"status"}')
                status = await next_of(filtered, "status")
                assert {w["name"] for w in status["data"]["exchanges"]} >= {BINANCE, BYBIT}
                await filtered.send_message('{"op":"subscribe","topic":"logs","since":0}')
                logs = await next_of(filtered, "logs")
                assert any("feedd serving on" in line["message"] for line in logs["data"])
                logging.getLogger("feedd.test").warning("live line")
                while True:
                    logs = await next_of(filtered, "logs")
                    if any(line["message"] == "live line" for line in logs["data"]):
                        break


@pytest.mark.parametrize(
    ("request_text", "field"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"op": "shout"}', "op"),
        ('{"op": "subscribe", "topic": "gossip"}', "topic"),
        ('{"op": "subscribe", "topic": "candles", "exchange": "kraken"}', "exchange"),
        ('{"op": "subscribe", "topic": "candles", "symbol": "btc"}', "symbol"),
        ('{"op": "subscribe", "topic": "candles", "interval": 60}', "interval"),
        ('{"op": "subscribe", "topic": "logs", "since": -4}', "since"),
    ],
)
async def test_bad_requests_get_an_error_and_the_socket_stays(
    tmp_path: Path, request_text: str, field: str | None
) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as ws:
            await ws.send_message(request_text)
            error = await next_of(ws, "error")
            assert error["error"] and error.get("field") == field
            await ws.send_message('{"op": "ping"}')
            assert await next_of(ws, "pong") == {"type": "pong"}


def candle(symbol: str, open_time: int, source: Source = Source.WS) -> Candle:
    return Candle(
        BINANCE, symbol, "1m", open_time, "1", "2", "0.5", "1.5", "3", "4.5", 7, False, source
    )


class _NoWriter:
    pass


async def test_hub_overflow_marks_only_the_slow_client() -> None:
    hub = LiveHub(_NoWriter(), LogRing(), dict)  # type: ignore[arg-type]
    slow, fast = Client(outbox=2), Client(outbox=100)
    for client in (slow, fast):
        hub.add(client)
        hub.filters.add(client, [CandleFilter()])
    for n in range(3):
        hub.publish_ingested([candle("BTCUSDT", n * 60_000)])
    assert slow.overflowed.is_set() and not fast.overflowed.is_set()
    received = [orjson.loads(fast.outbox_recv.receive_nowait()) for _ in range(3)]
    assert [m["data"][0]["open_time"] for m in received] == [0, 60_000, 120_000]
    # backfilled candles are not pushed, but the freshness record sees closed ones; forming
    # updates went out when ingested, so a commit does not send them again
    hub.publish([msgspec.structs.replace(candle("ETHUSDT", 0, Source.REST), closed=True)])
    hub.publish([candle("BTCUSDT", 120_000)])
    assert (BINANCE, "ETHUSDT", "1m") in hub.last_closed
    with pytest.raises(trio.WouldBlock):
        fast.outbox_recv.receive_nowait()


async def test_overflowed_client_is_closed_with_1008_others_keep_going(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        hub = service.state.hub
        async with (
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as slow,
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as other,
        ):
            # The slow one subscribes with a filter, so the test can find it in the hub.
            await slow.send_message(
                orjson.dumps({"op": "subscribe", "topic": "candles", "exchange": BINANCE}).decode()
            )
            await other.send_message('{"op":"subscribe","topic":"candles"}')
            for ws in (slow, other):
                await next_of(ws, "subscribed")
            with trio.fail_after(20):
                await next_of(slow, "candles")
                wanted = CandleFilter(BINANCE)
                target = next(c for c in hub.clients if wanted in hub.filters.filters(c))
                target.overflowed.set()  # what publish() does when the outbox is full
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await slow.get_message()
                assert closed.value.reason.code == 1008
                assert closed.value.reason.reason == "client too slow"
                await next_of(other, "candles")
                await next_of(other, "candles")
            assert len(hub.clients) == 1 and hub.overflows == 1


async def test_oversized_client_message_closes_only_that_socket(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with (
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as big,
            trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as fine,
        ):
            await big.send_message("x" * 100_000)
            with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await big.get_message()
            assert closed.value.reason.code == 1009  # message too big
            await fine.send_message('{"op": "ping"}')
            assert await next_of(fine, "pong") == {"type": "pong"}


async def test_service_freezes_what_it_made_at_start_and_thaws_it_at_stop(tmp_path: Path) -> None:
    # A full collection over every object alive since start stalls the loop (60 ms here, a
    # whole /ws delivery budget several times over): those are frozen out of its sight.
    gc.unfreeze()
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, _service, client):
        assert (await client.get("/health")).status_code == 200
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
        tracked = len(gc.get_objects())
        assert tracked < frozen  # collections scan what came after, not the start's objects
    assert gc.get_freeze_count() == 0


async def test_service_shortens_the_gil_switch_interval_and_restores_it_at_stop(
    tmp_path: Path,
) -> None:
    # While the writer thread runs Python code the loop waits up to the switch interval for
    # the GIL at each syscall: Python's 5 ms default is the whole /ws delivery budget.
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    try:
        async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, _service, client):
            assert (await client.get("/health")).status_code == 200
            assert sys.getswitchinterval() <= 0.001
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        sys.setswitchinterval(before)


async def test_hub_sends_the_same_text_to_everyone_and_to_a_filter_that_picks_all() -> None:
    # Everyone's message is encoded in one go, a filter's candle by candle: the bytes must
    # agree, and start as coalesce() expects, or a client that fell behind gets them unmerged.
    hub = LiveHub(_NoWriter(), LogRing(), dict)  # type: ignore[arg-type]
    everyone, picky = Client(), Client()
    for client, wanted in ((everyone, CandleFilter()), (picky, CandleFilter(BINANCE))):
        hub.add(client)
        hub.filters.add(client, [wanted])
    hub.publish_ingested([candle("BTCUSDT", 0), candle("ETHUSDT", 0)])
    text = everyone.outbox_recv.receive_nowait()
    assert text == picky.outbox_recv.receive_nowait()
    assert len(coalesce([text, text])) == 1
    assert [c["symbol"] for c in orjson.loads(text)["data"]] == ["BTCUSDT", "ETHUSDT"]
