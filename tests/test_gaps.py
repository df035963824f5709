"""The sans-IO gap detector: the heal a stream's first candle asks for, and the holes between
consecutive candles (a close never seen, whole candles skipped). Plain functions, no trio."""

from __future__ import annotations

from feedd.candle import Candle, Source
from feedd.engine.gaps import Gaps, HealRequest
from feedd.exchanges.contract import Stream
from feedd.intervals import DAY_MS, HOUR_MS, MINUTE_MS

BTC = Stream("BTCUSDT", "1m")
ETH = Stream("ETHUSDT", "1m")
T0 = 1_700_000_040_000  # a minute boundary


def candle(
    open_time: int, *, closed: bool, symbol: str = "BTCUSDT", interval: str = "1m"
) -> Candle:
    return Candle(
        "binance_futures", symbol, interval, open_time, "1", "2", "0.5", "1.5", "3", "4", 5,
        closed, Source.WS,
    )  # fmt: skip


def test_the_first_candle_asks_for_what_is_missing_below_it() -> None:
    gaps = Gaps()
    heal = gaps.observe(candle(T0, closed=False))
    assert heal == HealRequest(BTC, None, seen_ms=T0)
    assert heal.first_candle
    # per stream: another stream's first candle asks too
    assert gaps.observe(candle(T0, closed=False, symbol="ETHUSDT")) == HealRequest(
        ETH, None, seen_ms=T0
    )
    assert gaps.observe(candle(T0, closed=False)) is None


def test_an_unbroken_stream_asks_for_nothing() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=False))
    for minute in range(5):
        t = T0 + minute * MINUTE_MS
        assert gaps.observe(candle(t, closed=False)) is None
        assert gaps.observe(candle(t, closed=True)) is None
        assert gaps.observe(candle(t, closed=True)) is None  # a closed candle sent twice
    assert gaps.last_open_times() == {BTC: T0 + 4 * MINUTE_MS}


def test_a_close_never_seen_asks_for_that_candle() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=False))
    heal = gaps.observe(candle(T0 + MINUTE_MS, closed=False))
    assert heal == HealRequest(BTC, T0)
    assert not heal.first_candle


def test_skipped_candles_ask_for_the_first_one_missing() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=True))
    assert gaps.observe(candle(T0 + 3 * MINUTE_MS, closed=False)) == HealRequest(
        BTC, T0 + MINUTE_MS
    )


def test_a_close_missing_and_candles_skipped_ask_from_the_unclosed_one() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=False))
    assert gaps.observe(candle(T0 + 3 * MINUTE_MS, closed=True)) == HealRequest(BTC, T0)


def test_older_candles_change_nothing() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=True))
    gaps.observe(candle(T0 + MINUTE_MS, closed=False))
    # a late frame of an older minute (several per data array, not in order) ...
    assert gaps.observe(candle(T0, closed=False)) is None
    assert gaps.observe(candle(T0 - 5 * MINUTE_MS, closed=True)) is None
    assert gaps.last_open_times() == {BTC: T0 + MINUTE_MS}
    # ... so the newest candle still counts as forming, and its close is expected
    assert gaps.observe(candle(T0 + MINUTE_MS, closed=True)) is None
    assert gaps.observe(candle(T0 + 2 * MINUTE_MS, closed=False)) is None


def test_a_forming_update_after_the_close_does_not_reopen_the_candle() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0, closed=False))
    gaps.observe(candle(T0, closed=True))
    assert gaps.observe(candle(T0, closed=False)) is None
    assert gaps.observe(candle(T0 + MINUTE_MS, closed=False)) is None


def test_holes_are_measured_in_the_streams_interval() -> None:
    gaps = Gaps()
    gaps.observe(candle(T0 // HOUR_MS * HOUR_MS, closed=True, interval="1h"))
    nxt = T0 // HOUR_MS * HOUR_MS + HOUR_MS
    assert gaps.observe(candle(nxt, closed=False, interval="1h")) is None
    gaps.observe(candle(nxt, closed=True, interval="1h"))
    assert gaps.observe(candle(nxt + 2 * HOUR_MS, closed=False, interval="1h")) == HealRequest(
        Stream("BTCUSDT", "1h"), nxt + HOUR_MS
    )
    day = T0 // DAY_MS * DAY_MS
    gaps.observe(candle(day, closed=True, interval="1d"))
    assert gaps.observe(candle(day + DAY_MS, closed=False, interval="1d")) is None


def test_the_streams_that_spoke_and_their_newest_candles() -> None:
    gaps = Gaps()
    assert list(gaps.spoke()) == []
    assert gaps.last_open_times() == {}
    gaps.observe(candle(T0, closed=False))
    gaps.observe(candle(T0 + MINUTE_MS, closed=False, symbol="ETHUSDT"))
    gaps.observe(candle(T0 + MINUTE_MS, closed=False))
    assert set(gaps.spoke()) == {BTC, ETH}
    assert gaps.last_open_times() == {BTC: T0 + MINUTE_MS, ETH: T0 + MINUTE_MS}
