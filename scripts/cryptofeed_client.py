"""cryptofeed against feedd's simulator, for ``scripts/bench_ingest.py --cryptofeed PYTHON``.

Runs under a Python that has cryptofeed (it is not one of feedd's dependencies)::

    python3 -m venv .venv-cryptofeed && .venv-cryptofeed/bin/pip install cryptofeed

cryptofeed's Binance USD-M feed (uvloop, websockets, its own parsing into ``Candle`` objects)
subscribes the 1m candles of the given symbols through URL-subscribed combined streams on
the routed ``/market`` path, as the venue serves klines now (its default is the legacy root
path, which acknowledges kline streams and sends nothing: PROTOCOLS.md). Each candle reaches
an empty callback: it stores
nothing. After ``warm`` seconds it counts callbacks and this process's CPU for ``seconds``,
prints one JSON line and exits.

    python scripts/cryptofeed_client.py HTTP_BASE WS_BASE SECONDS WARM SYMBOLS_JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

import cryptofeed.connection
from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import CANDLES
from cryptofeed.exchanges import BinanceFutures


def point_at(http_base: str, ws_base: str) -> None:
    """The simulator's addresses instead of Binance's (plain ws:// on loopback)."""
    BinanceFutures.websocket_endpoints = [
        WebsocketEndpoint(ws_base + "/market", options={"compression": None})
    ]
    BinanceFutures.rest_endpoints = [
        RestEndpoint(
            http_base,
            routes=Routes(
                "/fapi/v1/exchangeInfo",
                l2book="/fapi/v1/depth?symbol={}&limit={}",
                authentication="/fapi/v1/listenKey",
                open_interest="/fapi/v1/openInterest?symbol={}",
            ),
        )
    ]
    init = cryptofeed.connection.WSAsyncConn.__init__

    def plain_ws(self: Any, address: str, *args: Any, **kwargs: Any) -> None:
        init(self, address.replace("ws://", "wss://", 1), *args, **kwargs)  # it insists on wss
        self.address = address

    cryptofeed.connection.WSAsyncConn.__init__ = plain_ws


def main() -> None:
    http_base, ws_base, seconds, warm, names = sys.argv[1:6]
    point_at(http_base, ws_base)
    by_native = {native: std for std, native in BinanceFutures.symbol_mapping().items()}
    symbols = [by_native[name] for name in json.loads(names) if name in by_native]
    count = [0]

    async def on_candle(candle: Any, receipt: float) -> None:
        count[0] += 1

    def report() -> None:
        time.sleep(float(warm))
        c0, n0, t0 = os.times(), count[0], time.monotonic()
        time.sleep(float(seconds))
        c1, n1, t1 = os.times(), count[0], time.monotonic()
        cpu = c1.user - c0.user + c1.system - c0.system
        line = {"client": "cryptofeed", "symbols": len(symbols), "frames": n1 - n0, "s": t1 - t0,
                "cpu_s": cpu}  # fmt: skip
        print(json.dumps(line), flush=True)
        os._exit(0)

    threading.Thread(target=report, daemon=True).start()
    handler = FeedHandler()
    # FeedHandler installs uvloop's policy, which makes no loop by itself
    asyncio.set_event_loop(asyncio.new_event_loop())
    feed = BinanceFutures(
        symbols=symbols, channels=[CANDLES], callbacks={CANDLES: on_candle}, candle_interval="1m",
        candle_closed_only=False,
    )  # fmt: skip
    handler.add_feed(feed)
    handler.run()


if __name__ == "__main__":
    main()
