"""What every task of one exchange shares: its module, channels, settings and counters."""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from feedd.candle import Candle
from feedd.engine.connector import Connector, open_connection
from feedd.engine.gaps import HealRequest as HealRequest  # shared by session, shard, backfill
from feedd.engine.pacing import Pacer
from feedd.engine.stats import ExchangeStats
from feedd.exchanges.contract import ExchangeModule, Stream


@attrs.define(eq=False)
class ExchangeContext:
    module: ExchangeModule
    ws_base: str
    rest_base: str
    candles_send: trio.MemorySendChannel[list[Candle]]
    heal_send: trio.MemorySendChannel[HealRequest]
    stats: ExchangeStats
    #: seconds without any frame before a connection is presumed dead
    silence_timeout: float
    #: seconds after which a connection is rotated (None: never)
    lifetime: float | None
    connect_pacer: Pacer
    log: logging.Logger
    #: opens a WebSocket (the selected connector); tests substitute in-memory streams
    connect: Connector = open_connection
    #: times the store lost its rows (``StoreGenerations.emptied``): a heal that fetched
    #: across one drops what it fetched
    store_emptied: Callable[[], int] = lambda: 0

    @property
    def stream_silence_timeout(self) -> float:
        # A single stream may be quieter than its connection (an illiquid symbol among
        # busy ones), so it gets twice the connection's allowance.
        return 2 * self.silence_timeout


def stream_key(stream: Stream) -> str:
    return f"{stream.symbol} {stream.interval}"
