"""The publisher's backlog: closed candles in order and bounded, forming updates coalesced per
series and never sent after a closed candle of their series."""

from __future__ import annotations

from feedd.candle import Candle, Source
from feedd.publish.backlog import Backlog


def c(symbol: str, minute: int, closed: bool, close: str = "1") -> Candle:
    return Candle("binance_futures", symbol, "1m", minute * 60_000, "1", "1", "1", close, "1",
                  "1", None, closed, Source.WS)  # fmt: skip


def test_forming_updates_keep_the_newest_per_series_and_count_the_rest() -> None:
    backlog = Backlog(10)
    backlog.add([c("BTCUSDT", 1, False, "1"), c("BTCUSDT", 1, False, "2"), c("ETHUSDT", 1, False)])
    backlog.add([c("BTCUSDT", 1, False, "3")])
    window, forming = backlog.peek(100)
    assert window == []
    assert sorted((f.symbol, f.close) for f in forming) == [("BTCUSDT", "3"), ("ETHUSDT", "1")]
    assert backlog.dropped_forming == 2
    assert len(backlog) == 0  # forming updates are taken, not retried


def test_a_closed_candle_drops_older_forming_ones_of_its_series() -> None:
    backlog = Backlog(10)
    backlog.add([c("BTCUSDT", 1, False), c("BTCUSDT", 1, True)])
    backlog.add([c("BTCUSDT", 0, False)])  # older than the closed one: stale
    window, forming = backlog.peek(100)
    assert [(x.open_time, x.closed) for x in window] == [(60_000, True)]
    assert forming == []
    assert backlog.dropped_forming == 2


def test_forming_updates_wait_until_the_closed_ones_before_them_are_out() -> None:
    backlog = Backlog(10)
    backlog.add([c("BTCUSDT", m, True) for m in range(3)] + [c("BTCUSDT", 3, False)])
    window, forming = backlog.peek(2)
    assert [x.open_time // 60_000 for x in window] == [0, 1] and forming == []
    backlog.done(window)
    window, forming = backlog.peek(2)
    assert [x.open_time // 60_000 for x in window] == [2]
    assert [f.open_time // 60_000 for f in forming] == [3]
    backlog.done(window)
    assert backlog.closed == 0


def test_a_full_backlog_drops_the_oldest_closed_candles_and_counts_them() -> None:
    backlog = Backlog(3)
    backlog.add([c("BTCUSDT", m, True) for m in range(2)])
    window, _ = backlog.peek(2)  # in flight while more arrive
    assert backlog.add([c("BTCUSDT", m, True) for m in range(2, 5)]) == 2
    assert backlog.dropped_closed == 2
    backlog.done(window)  # the acked window was pushed out already: nothing removed twice
    window, _ = backlog.peek(10)
    assert [x.open_time // 60_000 for x in window] == [2, 3, 4]
