"""A scripted in-memory venue speaking Binance's kline protocol, for engine timing tests.

Connections are trio memory streams wrapped by trio-websocket on both ends, so tests run
under the autojump clock: minutes of protocol time pass in milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import orjson
import trio
import trio.testing
import trio_websocket

from feedd.candle import Candle
from feedd.engine import connector
from feedd.engine.connector import Connection
from feedd.engine.context import ExchangeContext, HealRequest
from feedd.engine.pacing import Pacer
from feedd.engine.stats import ExchangeStats
from feedd.engine.ws import unwrapped_nursery
from feedd.exchanges import binance

MINUTE = 60.0


@attrs.define(eq=False)
class Script:
    """How the fake behaves; tests flip these while it runs."""

    push_every: float = 1.0
    silent: bool = False
    silent_symbols: set[str] = attrs.field(factory=set)
    reject_symbols: set[str] = attrs.field(factory=set)
    skip_close_of: set[tuple[str, int]] = attrs.field(factory=set)
    drop_after: float | None = None


@attrs.define(eq=False)
class FakeVenue:
    script: Script = attrs.field(factory=Script)
    connects: list[float] = attrs.field(factory=list)
    open_connections: int = 0
    max_open: int = 0
    subscribe_frames: list[dict[str, object]] = attrs.field(factory=list)
    _connected: trio.Event = attrs.field(factory=trio.Event)

    async def wait_connects(self, count: int) -> None:
        """Return once ``count`` connections have been accepted in total."""
        while len(self.connects) < count:
            await self._connected.wait()

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Connection]:
        client, server = trio.testing.memory_stream_pair()
        async with unwrapped_nursery() as nursery:
            nursery.start_soon(self._serve, server)
            # the connector selected (tests/test_engine.py runs with each)
            async with connector.client().wrap_stream(client, "fake", "/market/stream") as ws:
                yield ws
            nursery.cancel_scope.cancel()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        self.connects.append(trio.current_time())
        self._connected.set()
        self._connected = trio.Event()
        self.open_connections += 1
        self.max_open = max(self.max_open, self.open_connections)
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(nursery, stream)  # type: ignore[arg-type]
                ws = await request.accept()
                subscribed: list[str] = []
                nursery.start_soon(self._push, ws, subscribed)
                if self.script.drop_after is not None:
                    nursery.start_soon(self._drop_later, ws, self.script.drop_after)
                try:
                    while True:
                        message = orjson.loads(await ws.get_message())
                        self.subscribe_frames.append(message)
                        params = [str(p) for p in message["params"]]
                        rejects = self.script.reject_symbols
                        bad = [p for p in params if p.split("@")[0].upper() in rejects]
                        if bad:
                            error = {"code": 2, "msg": f"Invalid request: invalid stream {bad[0]}"}
                            answer = {"error": error, "id": message["id"]}
                        else:
                            subscribed.extend(params)
                            answer = {"result": None, "id": message["id"]}
                        await ws.send_message(orjson.dumps(answer).decode())
                except trio_websocket.ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.open_connections -= 1

    async def _drop_later(self, ws: trio_websocket.WebSocketConnection, after: float) -> None:
        await trio.sleep(after)
        await ws.aclose()

    async def _push(self, ws: trio_websocket.WebSocketConnection, subscribed: list[str]) -> None:
        last_open: dict[str, int] = {}
        while True:
            await trio.sleep(self.script.push_every)
            if self.script.silent:
                continue
            now = trio.current_time()
            open_ms = int(now // MINUTE * MINUTE * 1000)
            for name in list(subscribed):
                symbol = name.split("@")[0].upper()
                if symbol in self.script.silent_symbols:
                    continue
                previous = last_open.get(name)
                if (
                    previous is not None
                    and previous != open_ms
                    and (symbol, previous) not in self.script.skip_close_of
                ):
                    await ws.send_message(kline_frame(symbol, previous, closed=True))
                last_open[name] = open_ms
                await ws.send_message(kline_frame(symbol, open_ms, closed=False))


def kline_frame(symbol: str, open_ms: int, *, closed: bool) -> str:
    k = {
        "t": open_ms,
        "T": open_ms + 59_999,
        "s": symbol,
        "i": "1m",
        "f": 1,
        "L": 2,
        "o": "100.0",
        "c": "101.0",
        "h": "102.0",
        "l": "99.0",
        "v": "1.5",
        "n": 3,
        "x": closed,
        "q": "150.0",
        "V": "0.5",
        "Q": "50.0",
        "B": "0",
    }
    data = {"e": "kline", "E": open_ms + 1, "s": symbol, "k": k}
    return orjson.dumps({"stream": f"{symbol.lower()}@kline_1m", "data": data}).decode()


def make_context(
    venue: FakeVenue,
    *,
    silence_timeout: float = 10.0,
    lifetime: float | None = None,
) -> tuple[
    ExchangeContext,
    trio.MemoryReceiveChannel[list[Candle]],
    trio.MemoryReceiveChannel[HealRequest],
]:
    candles_send, candles_recv = trio.open_memory_channel[list[Candle]](10_000)
    heal_send, heal_recv = trio.open_memory_channel[HealRequest](10_000)
    ctx = ExchangeContext(
        module=binance,
        ws_base="ws://fake",
        rest_base="http://fake",
        candles_send=candles_send,
        heal_send=heal_send,
        stats=ExchangeStats(binance.NAME),
        silence_timeout=silence_timeout,
        lifetime=lifetime,
        connect_pacer=Pacer(100.0),
        log=logging.getLogger("test"),
        connect=venue.connect,
    )
    return ctx, candles_recv, heal_recv
