"""/ws candle filters: the index routes each candle to exactly the clients whose filters match,
whatever the number of filters, and what one client may ask is capped (filters per
connection, symbols per message, messages per second) with an error that changes nothing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import trio
import trio_websocket
from e2e import running_feedd
from test_ws import BINANCE, BYBIT, candle, next_of, ws_endpoint

from feedd.candle import Candle
from feedd.web import filters as filters_module
from feedd.web.filters import CandleFilter, FilterIndex, TooManyFilters
from feedd.web.socket import MAX_SYMBOLS_PER_MESSAGE, MESSAGE_BURST

OKX = "okx_futures"
VALUES: dict[str, list[str | None]] = {
    "exchange": [None, BINANCE, BYBIT],
    "symbol": [None, "BTCUSDT", "ETHUSDT"],
    "interval": [None, "1m", "5m"],
}
EVERY_FILTER = [CandleFilter(*combo) for combo in itertools.product(*VALUES.values())]


def series_candle(exchange: str, symbol: str, interval: str, open_time: int = 0) -> Candle:
    return msgspec.structs.replace(candle(symbol, open_time), exchange=exchange, interval=interval)


def brute_force(wanted: set[CandleFilter], c: Candle) -> bool:
    return any(
        (f.exchange in (None, c.exchange))
        and (f.symbol in (None, c.symbol))
        and (f.interval in (None, c.interval))
        for f in wanted
    )


def test_route_equals_matching_every_filter() -> None:
    """Every subset of a few filters for each of three clients routes like a filter-by-filter
    match, candles in order and each once."""
    batch = [
        series_candle(ex, sym, iv, n)
        for n, (ex, sym, iv) in enumerate(
            itertools.product([BINANCE, BYBIT, OKX], ["BTCUSDT", "ETHUSDT", "XUSDT"], ["1m", "5m"])
        )
    ]
    for seed in range(200):
        index = FilterIndex[str]()
        chosen: dict[str, set[CandleFilter]] = {}
        for n, client in enumerate(("a", "b", "c")):
            picks = {f for i, f in enumerate(EVERY_FILTER) if (seed * 7 + i * (n + 3)) % 5 == 0}
            picks.discard(CandleFilter())
            if picks:
                index.add(client, picks)
                chosen[client] = picks
        routed = index.route(batch)
        for client, wanted in chosen.items():
            expected = [n for n, c in enumerate(batch) if brute_force(wanted, c)]
            assert routed.get(client, []) == expected, (seed, client)


def test_everything_filter_is_shared_and_not_routed() -> None:
    index = FilterIndex[str]()
    index.add("all", [CandleFilter(), CandleFilter(BINANCE)])
    index.add("one", [CandleFilter(BINANCE, "BTCUSDT")])
    batch = [series_candle(BINANCE, "BTCUSDT", "1m"), series_candle(BYBIT, "BTCUSDT", "1m")]
    assert index.everyone() == {"all"}
    assert index.route(batch) == {"one": [0]}


def test_discard_and_clear_leave_no_trace() -> None:
    index = FilterIndex[str]()
    index.add("a", EVERY_FILTER)
    index.add("b", [CandleFilter(BINANCE)])
    index.discard("a", EVERY_FILTER[:10])
    assert index.filters("a") == frozenset(EVERY_FILTER[10:])
    index.clear("a")
    index.discard("b", [CandleFilter(BINANCE)])
    index.discard("nobody", [CandleFilter()])
    assert not index
    assert index.route([series_candle(BINANCE, "BTCUSDT", "1m")]) == {}
    assert (index._clients, index._filters, dict(index._shapes)) == ({}, {}, {})


def test_the_cap_refuses_a_request_whole() -> None:
    index = FilterIndex[str](limit=3)
    index.add("a", [CandleFilter(BINANCE), CandleFilter(BYBIT)])
    with pytest.raises(TooManyFilters, match="at most 3"):
        index.add("a", [CandleFilter(OKX), CandleFilter(OKX, "BTCUSDT")])
    assert index.filters("a") == {CandleFilter(BINANCE), CandleFilter(BYBIT)}
    index.add("a", [CandleFilter(BINANCE), CandleFilter(OKX)])  # one new: fits
    assert len(index.filters("a")) == 3


def test_routing_cost_does_not_grow_with_the_number_of_filters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 filters of one client cost a candle the same look-ups as one filter: counted,
    not timed (each look-up builds the candle's key for one filter shape)."""
    calls = 0
    key_of = filters_module._key_of

    def counting(c: Candle, shape: int) -> Any:
        nonlocal calls
        calls += 1
        return key_of(c, shape)

    monkeypatch.setattr(filters_module, "_key_of", counting)
    batch = [series_candle(BINANCE, "BTCUSDT", "1m", n * 60_000) for n in range(100)]
    small = FilterIndex[str]()
    small.add("flood", [CandleFilter(BYBIT, "X0USDT", "1m")])
    small.route(batch)
    one, calls = calls, 0
    big = FilterIndex[str](limit=200_000)
    big.add("flood", [CandleFilter(BYBIT, f"X{n}USDT", "1m") for n in range(100_000)])
    big.add("good", [CandleFilter(BINANCE, "BTCUSDT", "1m")])
    assert big.route(batch) == {"good": list(range(100))}
    assert calls == one == len(batch)


async def subscribe(ws: trio_websocket.WebSocketConnection, **fields: Any) -> dict[str, Any]:
    await ws.send_message(orjson.dumps({"op": "subscribe", "topic": "candles", **fields}).decode())
    while True:
        message = orjson.loads(await ws.get_message())
        if message["type"] in ("subscribed", "error"):
            return message  # type: ignore[no-any-return]


async def test_filters_per_connection_are_capped(tmp_path: Path) -> None:
    """Up to the cap, lists of symbols subscribe; one more is refused with an error naming
    the cap, and what the client held still streams."""
    cap = filters_module.MAX_FILTERS_PER_CLIENT
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as ws:
            names = ["BTCUSDT"] + [f"X{n}USDT" for n in range(cap - 1)]
            for start in range(0, cap, MAX_SYMBOLS_PER_MESSAGE):
                chunk = names[start : start + MAX_SYMBOLS_PER_MESSAGE]
                reply = await subscribe(ws, exchange=BINANCE, symbols=chunk, interval="1m")
                assert reply == {
                    "type": "subscribed",
                    "topic": "candles",
                    "exchange": BINANCE,
                    "symbols": chunk,
                    "interval": "1m",
                }
            refused = await subscribe(ws, exchange=BINANCE, symbol="Y1USDT")
            assert refused["type"] == "error" and f"at most {cap}" in refused["error"]
            hub = service.state.hub
            (client,) = hub.clients
            assert len(hub.filters.filters(client)) == cap
            with trio.fail_after(20):
                batch = await next_of(ws, "candles")
            assert {c["symbol"] for c in batch["data"]} == {"BTCUSDT"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"symbols": []}, "symbols"),
        ({"symbols": "BTCUSDT"}, "symbols"),
        ({"symbols": ["BTCUSDT", 7]}, "symbols[1]"),
        ({"symbols": ["BTCUSDT", "a/b"]}, "symbols[1]"),
        ({"symbols": ["BTCUSDT"], "symbol": "BTCUSDT"}, "symbols"),
        ({"symbols": [f"X{n}USDT" for n in range(MAX_SYMBOLS_PER_MESSAGE + 1)]}, "symbols"),
    ],
)
async def test_bad_symbol_lists_change_nothing(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as ws:
            reply = await subscribe(ws, **fields)
            assert reply["type"] == "error" and reply["field"] == field, reply
            assert not service.state.hub.filters


async def test_a_message_flood_is_answered_not_served(tmp_path: Path) -> None:
    """Past the burst, messages are refused at the sustained rate: a client sending 400
    subscriptions at once gets most of them refused and holds only what was admitted."""
    sent = 400
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, _client):
        host, port = ws_endpoint(service.url)
        async with trio_websocket.open_websocket(host, port, "/ws", use_ssl=False) as ws:
            began = trio.current_time()
            for n in range(sent):
                await ws.send_message(
                    orjson.dumps(
                        {"op": "subscribe", "topic": "candles", "symbol": f"X{n}USDT"}
                    ).decode()
                )
            replies: dict[str, int] = {}
            with trio.fail_after(20):
                while sum(replies.values()) < sent:
                    message = orjson.loads(await ws.get_message())
                    if message["type"] in ("subscribed", "error"):
                        replies[message["type"]] = replies.get(message["type"], 0) + 1
                        if message["type"] == "error":
                            assert "too many messages" in message["error"]
            elapsed = trio.current_time() - began
            (client,) = service.state.hub.clients
            admitted = len(service.state.hub.filters.filters(client))
        assert admitted == replies["subscribed"]
        assert MESSAGE_BURST <= admitted <= MESSAGE_BURST + 20 * elapsed + 1, (admitted, elapsed)
        assert replies["error"] == sent - admitted
