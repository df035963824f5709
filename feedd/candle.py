"""The candle value every part of feedd passes around, and where it came from."""

from __future__ import annotations

import enum

import attrs


class Source(enum.IntEnum):
    """Where a candle came from; stored as a small integer."""

    WS = 0
    REST = 1
    #: a venue's bulk archive file (always closed): history, never pushed live
    ARCHIVE = 2


@attrs.frozen(slots=True)
class Candle:
    """One OHLCV candle as the exchange reported it.

    Prices and volumes stay the exchange's decimal strings until the store encodes them, so
    nothing is rounded on the way. ``volume`` is in the base asset, ``quote_volume`` in the
    quote asset; ``trades`` is None where the exchange does not report it.
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
