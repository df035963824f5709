"""Deep simulated history: years back on every venue, paged with each venue's real rules, equal
to the truth, starting at the listing time the instrument lists report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio.testing

from feedd.intervals import DAY_MS, MINUTE_MS, floor_open
from feedd.sim import SimSettings, Simulator, open_simulator
from feedd.sim.__main__ import build_parser, settings_from
from feedd.sim.archive import SimArchive
from feedd.sim.clock import DEFAULT_START_MS
from feedd.sim.market import MAX_TRADES_PER_MINUTE, Market, _aggregate
from feedd.sim.venue import TruthCandle

T0 = DEFAULT_START_MS
YEARS = 3
#: a whole minute two years before the start, deep in the cheap-bar history
Y = floor_open("1d", T0 - 2 * 365 * DAY_MS) + 7 * MINUTE_MS
BN, BY, OK = "binance_futures", "bybit_futures", "okx_futures"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def sim(clock: trio.testing.MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(SimSettings(history_days=YEARS * 365)) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def truth(sim: Simulator, venue: str, start: int, count: int) -> list[TruthCandle]:
    return sim.truth(venue, "BTCUSDT", "1m", start, start + (count - 1) * MINUTE_MS)


async def get(http: httpx.AsyncClient, sim: Simulator, venue: str, path: str, **params: Any) -> Any:
    return (await http.get(sim.venues[venue].rest_url + path, params=params)).json()


async def test_binance_pages_1500_oldest_first_from_the_listing(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    path = "/fapi/v1/klines"
    rows = await get(http, sim, BN, path, symbol="BTCUSDT", interval="1m", startTime=Y, limit=1500)
    assert [r[0] for r in rows] == [Y + i * MINUTE_MS for i in range(1500)]
    got = [TruthCandle(r[0], *r[1:6], r[7], r[8]) for r in rows]
    assert got == truth(sim, BN, Y, 1500)
    # the next page starts after the last row; endTime caps a page
    nxt = await get(
        http, sim, BN, path, symbol="BTCUSDT", interval="1m",
        startTime=rows[-1][0] + 1, endTime=rows[-1][0] + 3 * MINUTE_MS, limit=1500,
    )  # fmt: skip
    assert [r[0] for r in nxt] == [Y + (1500 + i) * MINUTE_MS for i in range(3)]
    # asking from 0 starts at the listing (exchangeInfo's onboardDate), years back
    info = await get(http, sim, BN, "/fapi/v1/exchangeInfo")
    listed = next(s["onboardDate"] for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    first = await get(http, sim, BN, path, symbol="BTCUSDT", interval="1m", startTime=0, limit=2)
    assert first[0][0] == listed and T0 - listed >= YEARS * 365 * DAY_MS - MINUTE_MS
    one = truth(sim, BN, listed, 1)[0]
    assert first[0][1:6] == [one.open, one.high, one.low, one.close, one.volume]


async def test_bybit_pages_1000_newest_first(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    end = Y + 999 * MINUTE_MS
    body = await get(
        http, sim, BY, "/v5/market/kline",
        category="linear", symbol="BTCUSDT", interval="1", start=Y - 5 * MINUTE_MS, end=end,
        limit=1000,
    )  # fmt: skip
    rows = body["result"]["list"]
    assert [int(r[0]) for r in rows] == [end - i * MINUTE_MS for i in range(1000)]
    got = [TruthCandle(int(r[0]), *r[1:7], None) for r in rows[::-1]]
    assert got == truth(sim, BY, Y, 1000)
    instruments = await get(
        http, sim, BY, "/v5/market/instruments-info", category="linear", symbol="BTCUSDT"
    )
    launch = int(instruments["result"]["list"][0]["launchTime"])
    oldest = await get(
        http, sim, BY, "/v5/market/kline",
        category="linear", symbol="BTCUSDT", interval="1", end=launch + MINUTE_MS, limit=5,
    )  # fmt: skip
    assert [int(r[0]) for r in oldest["result"]["list"]] == [launch + MINUTE_MS, launch]


async def test_okx_history_candles_100_with_exclusive_bounds(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    base = {"instId": "BTC-USDT-SWAP", "bar": "1m"}
    after = Y + 100 * MINUTE_MS
    body = await get(http, sim, OK, "/api/v5/market/history-candles", **base, after=after)
    rows = body["data"]
    assert [int(r[0]) for r in rows] == [after - (i + 1) * MINUTE_MS for i in range(100)]
    got = [TruthCandle(int(r[0]), *r[1:5], r[6], r[7], None) for r in rows[::-1]]
    want = truth(sim, OK, Y, 100)
    assert [(c.open_time, c.open, c.high, c.low, c.close) for c in got] == [
        (c.open_time, c.open, c.high, c.low, c.close) for c in want
    ]
    assert all(r[8] == "1" for r in rows)
    both = await get(
        http, sim, OK, "/api/v5/market/history-candles",
        **base, after=Y + 3 * MINUTE_MS, before=Y - 1,
    )  # fmt: skip
    assert [int(r[0]) for r in both["data"]] == [Y + 2 * MINUTE_MS, Y + MINUTE_MS, Y]
    # ``candles`` serves only the latest 1,440 bars: nothing from years back
    recent = await get(http, sim, OK, "/api/v5/market/candles", **base, after=after)
    assert recent["code"] == "0" and recent["data"] == []


def test_deep_history_bars_aggregate_like_traded_ones() -> None:
    """Minutes before ``detail_from_ms`` are drawn an hour at a time, and an hour (and so a
    day) is summed from the draws directly: both must equal the aggregate of the 1m bars."""
    detail = floor_open("1d", T0) - DAY_MS
    market = Market(1, history_start_ms=T0 - YEARS * 365 * DAY_MS, detail_from_ms=detail)
    check = Market(1, history_start_ms=T0 - YEARS * 365 * DAY_MS, detail_from_ms=detail)
    for hour in (Y - 7 * MINUTE_MS, detail - 3_600_000):
        minutes = [check.final("ETHUSDT", "1m", hour + i * MINUTE_MS) for i in range(60)]
        assert market.final("ETHUSDT", "1h", hour) == _aggregate("1h", hour, minutes)
        assert all(m.trades and m.low <= min(m.open, m.close) for m in minutes)
        assert all(m.high >= max(m.open, m.close) and m.quote > 0 for m in minutes)
    day = Y - 7 * MINUTE_MS
    hours = [check.final("ETHUSDT", "1h", day + i * 3_600_000) for i in range(24)]
    assert market.final("ETHUSDT", "1d", day) == _aggregate("1d", day, hours)
    # deterministic, and joined up across the seam with the traded minutes
    assert Market(1, detail_from_ms=detail).final("BTCUSDT", "1m", Y) == market.final(
        "BTCUSDT", "1m", Y
    )
    before, after = (market.final("BTCUSDT", "1m", detail + i * MINUTE_MS) for i in (-1, 0))
    assert abs(after.open - before.close) < before.close * 0.002
    assert after.first_id == before.last_id + MAX_TRADES_PER_MINUTE - before.trades + 1


async def test_bulk_deep_history_equals_a_bar_per_minute(sim: Simulator) -> None:
    """Archives and the truth of deep history are formatted an hour at a time from the draws
    (``Venue.deep_minutes``): the same text as a ``Bar`` per minute, for symbols of every
    price and quantity precision, on both sides of the seam with the traded minutes."""
    venue = sim.venues[BN]
    archive = SimArchive(venue)  # type: ignore[arg-type]
    seam = venue.market.detail_from_ms
    assert seam is not None
    # prices with 2, 7 and 8 decimals, quantities with 3 and none
    symbols = ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ZQXUSDT"]
    for symbol in symbols:
        spec = venue.market.spec(symbol)
        for start in (Y - 7 * MINUTE_MS, seam - 2 * 3_600_000):
            end = start + 3 * 3_600_000  # across the seam for the second start
            slow = [
                venue.truth_candle(venue.market.final(symbol, "1m", t))
                for t in range(start, end, MINUTE_MS)
            ]
            assert venue.truth(symbol, "1m", start, end - MINUTE_MS) == slow, spec
            rows = [
                ",".join(str(cell) for cell in venue.kline_row(venue.market.final(symbol, "1m", t)))  # type: ignore[attr-defined]
                for t in range(start, end, MINUTE_MS)
            ]
            assert (
                archive.csv(symbol, "1m", start, end).decode().split("\n")[-len(rows) - 1 : -1]
                == rows
            )


def test_holes_from_the_command_line() -> None:
    args = build_parser().parse_args(["--hole", "BTCUSDT:60000:120000", "--hole", "ETHUSDT:0:0"])
    assert settings_from(args).holes == (("BTCUSDT", 60_000, 120_000), ("ETHUSDT", 0, 0))
    for bad in ("BTCUSDT:2:1", "BTCUSDT:1", ":1:2", "BTCUSDT:a:2"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--hole", bad])
    market = Market(1, holes=[("BTCUSDT", 60_000, 120_000)])
    assert [market.exists("BTCUSDT", t) for t in (0, 60_000, 120_000, 180_000)] == [
        True, False, False, True
    ]  # fmt: skip
    assert market.exists("ETHUSDT", 60_000)
