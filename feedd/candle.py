"""The candle value every part of feedd passes around, and where it came from."""

from __future__ import annotations

import enum

import msgspec


class Source(enum.IntEnum):
    """Where a candle came from; stored as a small integer."""

    WS = 0
    REST = 1
    #: a venue's bulk archive file (always closed): history, never pushed live
    ARCHIVE = 2


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV candle as the exchange reported it.

    Prices and volumes stay the exchange's decimal strings until the store encodes them, so
    nothing is rounded on the way. ``volume`` is in the base asset, ``quote_volume`` in the
    quote asset; ``trades`` is None where the exchange does not report it.

    A frozen msgspec Struct, not a frozen attrs class like feedd's other values: one is made
    for every update received, and attrs' frozen constructor (one ``object.__setattr__`` per
    field) took 1.1-1.5 us of the event loop's time per candle against 0.15 us (#17). It is
    immutable, compares and hashes by value all the same; ``gc=False`` since it only ever
    holds strings, numbers and an enum member, never a container that could close a cycle.
    """

    exchange: str
    symbol: str
    interval: str
    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int | None
    closed: bool
    source: Source

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.exchange, self.symbol, self.interval, self.open_time)
