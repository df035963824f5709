"""Frames and REST answers captured from the live venues (../shared/real-frames, with
provenance in its README) through the venue parsers.

Captures graded real or docs are oracles: every candle field is compared with the capture,
read by PROTOCOLS.md's canonical mapping. Doubtful captures must only parse or be refused
cleanly. The corpus lives beside the repository, never in it; without it this file skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedd.candle import Candle, Source
from feedd.errors import ParseError
from feedd.exchanges import binance, bybit, okx
from feedd.exchanges.contract import (
    ExchangeModule,
    Ignored,
    InstrumentsPage,
    Pong,
    Stream,
    SubscribeAck,
)
from feedd.intervals import close_time
from feedd.symbols import is_symbol

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "real-frames"
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"no real-frames corpus at {CORPUS} (it lives in the steering repo's shared/)",
)

PRICES = ("open", "high", "low", "close")


def text(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def body(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def load(name: str) -> Any:
    return orjson.loads(body(name))


def log_frames(name: str) -> list[str]:
    """The frames of a cryptofeed session log: ``<receive time>: <frame>`` after the URL line."""
    lines = text(name).splitlines()[1:]
    return [line.split(": ", 1)[1] for line in lines if line.strip()]


def assert_candle(candle: object, module: ExchangeModule, source: Source, **want: object) -> int:
    """Every field of ``candle`` against the capture; returns how many were compared."""
    assert isinstance(candle, Candle)
    assert candle.exchange == module.NAME and candle.source is source
    got = {name: getattr(candle, name) for name in want}
    assert got == want
    return len(want)


# ----------------------------------------------------------------------------- Binance


def binance_ws_expected(k: dict[str, Any]) -> dict[str, object]:
    """PROTOCOLS.md section 1.4: ``k.t`` open time, ``o h l c``, ``v`` base, ``q`` quote,
    ``n`` trades, ``x`` closed."""
    return {
        "symbol": k["s"],
        "interval": k["i"],
        "open_time": k["t"],
        **{name: k[name[0]] for name in PRICES},
        "volume": k["v"],
        "quote_volume": k["q"],
        "trades": k["n"],
        "closed": k["x"],
    }


def test_binance_kline_session() -> None:
    """67 combined-stream frames of four symbols across a minute's close."""
    frames = log_frames("binance/ws_kline_combined_session_2021-07-22.log")
    assert len(frames) == 67
    closed = []
    for frame in frames:
        k = orjson.loads(frame)["data"]["k"]
        [candle] = binance.parse_frame(frame)
        assert_candle(candle, binance, Source.WS, **binance_ws_expected(k))
        if k["x"]:
            closed.append(candle)
    assert {c.symbol for c in closed} == {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
    assert {c.open_time for c in closed} == {1626992700000}


def test_binance_monthly_kline() -> None:
    frame = text("binance/ws_kline_1M_forming_2022-05-29.json")
    [candle] = binance.parse_frame(frame)
    k = orjson.loads(frame)["data"]["k"]
    assert_candle(candle, binance, Source.WS, **binance_ws_expected(k))
    assert candle.interval == "1M" and not candle.closed  # month, not minute


def test_binance_rest_klines() -> None:
    """Rows ``[t, o, h, l, c, v, T, q, n, …]``, oldest first, closed iff the server passed T."""
    name = "binance/rest_klines_1h_BTCUSDT_2024-06-17.json"
    rows = load(name)
    stream = Stream("BTCUSDT", "1h")
    last_close = rows[-1][6]
    candles = binance.parse_klines(stream, 200, body(name), last_close)
    assert len(candles) == len(rows) == 4
    for candle, row in zip(candles, rows, strict=True):
        assert_candle(
            candle,
            binance,
            Source.REST,
            symbol="BTCUSDT",
            interval="1h",
            open_time=row[0],
            **dict(zip(PRICES, row[1:5], strict=True)),
            volume=row[5],
            quote_volume=row[7],
            trades=row[8],
            closed=row[6] < last_close,
        )
    assert [c.closed for c in candles] == [True, True, True, False]
    later = binance.parse_klines(stream, 200, body(name), last_close + 1)
    assert all(c.closed for c in later)


def test_binance_time() -> None:
    name = "binance/rest_time_spot_2021-10-10.json"
    assert binance.parse_time(200, body(name)) == load(name)["serverTime"] == 1633835466289


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        # BUSD perpetuals, quarterlies and a PENDING_TRADING row with contractType ""
        ("binance/rest_exchangeInfo_2021-07.json", {"BTCSTUSDT", "BTCUSDT_210924"}),
        ("binance/rest_exchangeInfo_2022-02-19.json", {"BTCUSDT_220325"}),
    ],
)
def test_binance_exchange_info(name: str, refused: set[str]) -> None:
    symbols = load(name)["symbols"]
    tradable = tuple(
        s["symbol"]
        for s in symbols
        if s["contractType"] == "PERPETUAL"
        and s["quoteAsset"] == "USDT"
        and s["status"] == "TRADING"
    )
    page = binance.parse_instruments(200, body(name))
    assert page == InstrumentsPage(tradable, None)
    assert "BTCUSDT" in page.symbols and not refused & set(page.symbols)
    assert all(is_symbol(s) for s in page.symbols)


# ----------------------------------------------------------------------------- Bybit

BYBIT_WS_KLINES = [
    "bybit/ws_kline_5_BTCPERP_forming_2022-12-16.json",
    "bybit/ws_kline_1_BTCUSDT_forming_2024-06-29.json",
    "bybit/ws_kline_5_BTCUSDT_forming_docs.json",
]


@pytest.mark.parametrize("name", BYBIT_WS_KLINES)
def test_bybit_ws_kline(name: str) -> None:
    """PROTOCOLS.md section 2.4: ``start``, ``open … close``, ``volume`` base, ``turnover``
    quote, ``confirm`` closed; the symbol from the topic."""
    frame = load(name)
    [item] = frame["data"]
    [candle] = bybit.parse_frame(text(name))
    assert_candle(
        candle,
        bybit,
        Source.WS,
        symbol=frame["topic"].split(".")[2],
        interval={"1": "1m", "5": "5m"}[item["interval"]],
        open_time=item["start"],
        **{name: item[name] for name in PRICES},
        volume=item["volume"],
        quote_volume=item["turnover"],
        trades=None,
        closed=item["confirm"],
    )


def test_bybit_pong_and_ack() -> None:
    assert bybit.parse_frame(text("bybit/ws_pong_linear_docs.json")) == [Pong()]
    # The docs' linear ack carries no req_id.
    assert bybit.parse_frame(text("bybit/ws_subscribe_ack_linear_docs.json")) == [
        SubscribeAck(None)
    ]


def test_bybit_rest_klines() -> None:
    """Newest first, every element a string; the newest row still forming at ``time``."""
    name = "bybit/rest_klines_linear_D_BTCUSDT_2023-09-14.json"
    answer = load(name)
    rows = answer["result"]["list"]
    candles = bybit.parse_klines(Stream("BTCUSDT", "1d"), 200, body(name), answer["time"])
    assert [c.open_time for c in candles] == sorted(int(r[0]) for r in rows)
    for candle, row in zip(candles, reversed(rows), strict=True):
        assert_candle(
            candle,
            bybit,
            Source.REST,
            symbol="BTCUSDT",
            interval="1d",
            open_time=int(row[0]),
            **dict(zip(PRICES, row[1:5], strict=True)),
            volume=row[5],
            quote_volume=row[6],
            trades=None,
            closed=close_time("1d", int(row[0])) <= answer["time"],
        )
    assert [c.closed for c in candles] == [True, True, False]


def test_bybit_spot_klines_have_the_same_shape() -> None:
    """Category spot: not a feed of ours, a check of the row shape only."""
    name = "bybit/rest_klines_spot_60_BTCUSDT_2024-05-08.json"
    answer = load(name)
    candles = bybit.parse_klines(Stream("BTCUSDT", "1h"), 200, body(name), answer["time"])
    assert len(candles) == 5 and [c.open_time for c in candles] == sorted(
        int(r[0]) for r in answer["result"]["list"]
    )


@pytest.mark.parametrize("name", ["bybit/rest_time_2023-09-14.json", "bybit/rest_time_docs.json"])
def test_bybit_time(name: str) -> None:
    answer = load(name)
    assert bybit.parse_time(200, body(name)) == answer["time"]
    assert int(answer["result"]["timeNano"]) // 1_000_000 == answer["time"]


@pytest.mark.parametrize(
    ("name", "symbols", "cursor"),
    [
        ("bybit/rest_instruments_linear_2023-09-14.json", ("BTCUSDT", "ETHUSDT"), None),
        ("bybit/rest_instruments_linear_trading_docs.json", ("BTCUSDT",), None),
        # PreLaunch is not tradable; the cursor arrives percent-encoded
        (
            "bybit/rest_instruments_linear_prelaunch_docs.json",
            (),
            "first%3DBIOUSDT%26last%3DBIOUSDT",
        ),
    ],
)
def test_bybit_instruments(name: str, symbols: tuple[str, ...], cursor: str | None) -> None:
    assert bybit.parse_instruments(200, body(name)) == InstrumentsPage(symbols, cursor)
    if cursor is not None:
        # Sent back exactly as given (PROTOCOLS.md section 7), not encoded a second time.
        assert bybit.instruments_request(cursor).query().endswith(f"&cursor={cursor}")


# ----------------------------------------------------------------------------- OKX


def okx_expected(row: list[str], interval: str) -> dict[str, object]:
    """PROTOCOLS.md section 3.4: index 5 counts contracts and is never stored; 6 is base, 7
    quote, 8 the closed flag."""
    return {
        "symbol": "BTCUSDT",
        "interval": interval,
        "open_time": int(row[0]),
        **dict(zip(PRICES, row[1:5], strict=True)),
        "volume": row[6],
        "quote_volume": row[7],
        "trades": None,
        "closed": row[8] == "1",
    }


@pytest.mark.parametrize(
    ("name", "interval"),
    [
        ("okx/rest_candles_BTC-USDT-SWAP_2025-05-13.json", "1m"),
        ("okx/rest_candles_1H_BTC-USDT-SWAP_2024-06-17.json", "1h"),
    ],
)
def test_okx_rest_candles(name: str, interval: str) -> None:
    rows = load(name)["data"]
    stream = Stream("BTCUSDT", interval)
    candles = okx.parse_klines(stream, 200, body(name), int(rows[0][0]))
    assert [c.open_time for c in candles] == sorted(int(r[0]) for r in rows)  # newest first
    for candle, row in zip(candles, reversed(rows), strict=True):
        assert_candle(candle, okx, Source.REST, **okx_expected(row, interval))


def test_okx_volume_is_base_not_contracts() -> None:
    """1040.37 contracts of 0.01 BTC: 10.4037 BTC is what a candle's volume means."""
    name = "okx/rest_candles_BTC-USDT-SWAP_2025-05-13.json"
    newest = okx.parse_klines(Stream("BTCUSDT", "1m"), 200, body(name), 0)[-1]
    assert (newest.volume, newest.quote_volume) == ("10.4037", "1069603.34883")


@pytest.mark.parametrize(
    "name", ["okx/rest_instruments_SWAP_2022-05-13.json", "okx/rest_instruments_SWAP_2025.json"]
)
def test_okx_instruments(name: str) -> None:
    rows = load(name)["data"]
    tradable = tuple(
        r["instId"].removesuffix("-USDT-SWAP") + "USDT"
        for r in rows
        if r["ctType"] == "linear" and r["settleCcy"] == "USDT" and r["state"] == "live"
    )
    page = okx.parse_instruments(200, body(name))
    assert page == InstrumentsPage(tradable, None)
    assert "BTCUSDT" in page.symbols and all(is_symbol(s) for s in page.symbols)


def test_okx_acks_of_other_channels_are_ignored() -> None:
    """tickers/trades/books acks on /public without ``id``: never ours, never an error."""
    frames = log_frames("okx/ws_subscribe_acks_public_2022-05-13.log")
    assert len(frames) == 18
    for frame in frames:
        [event] = okx.parse_frame(frame)
        assert isinstance(event, Ignored), frame
        assert orjson.loads(frame)["arg"]["channel"] in event.reason


@pytest.mark.parametrize(
    "name",
    [
        # pre-2024 row without volCcyQuote and confirm: no quote volume to store
        "okx/ws_candle1m_BTC-USDT-SWAP_7fields_2022-09-09.json",
        # spot BTC-USDT on the UTC+8 daily bar: neither an instrument nor a bar of ours
        "okx/ws_candle1D_BTC-USDT_docs.json",
    ],
)
def test_okx_expected_rejections(name: str) -> None:
    with pytest.raises(ParseError):
        okx.parse_frame(text(name))


# ----------------------------------------------------------------------------- doubtful

DOUBTFUL: dict[str, Callable[[bytes], object]] = {
    "okx/ws_candle1H_spot_shaped_closed_2024-01-16.json": lambda b: okx.parse_frame(b.decode()),
    "okx/ws_candle1H_spot_shaped_forming_2024-01-16.json": lambda b: okx.parse_frame(b.decode()),
    "okx/rest_candles_zero_volccy_2021-07-01.json": lambda b: okx.parse_klines(
        Stream("BTCUSDT", "1m"), 200, b, 0
    ),
}


@pytest.mark.parametrize("name", sorted(DOUBTFUL))
def test_doubtful_captures_parse_or_are_refused(name: str) -> None:
    """Edited or mislabelled captures are no oracle: a clean answer either way is enough."""
    with contextlib.suppress(ParseError):
        DOUBTFUL[name](body(name))


# ----------------------------------------------------------------------------- coverage

COVERED = {
    "binance/ws_kline_combined_session_2021-07-22.log",
    "binance/ws_kline_1M_forming_2022-05-29.json",
    "binance/rest_klines_1h_BTCUSDT_2024-06-17.json",
    "binance/rest_time_spot_2021-10-10.json",
    "binance/rest_exchangeInfo_2021-07.json",
    "binance/rest_exchangeInfo_2022-02-19.json",
    *BYBIT_WS_KLINES,
    "bybit/ws_pong_linear_docs.json",
    "bybit/ws_subscribe_ack_linear_docs.json",
    "bybit/rest_klines_linear_D_BTCUSDT_2023-09-14.json",
    "bybit/rest_klines_spot_60_BTCUSDT_2024-05-08.json",
    "bybit/rest_time_2023-09-14.json",
    "bybit/rest_time_docs.json",
    "bybit/rest_instruments_linear_2023-09-14.json",
    "bybit/rest_instruments_linear_trading_docs.json",
    "bybit/rest_instruments_linear_prelaunch_docs.json",
    "okx/rest_candles_BTC-USDT-SWAP_2025-05-13.json",
    "okx/rest_candles_1H_BTC-USDT-SWAP_2024-06-17.json",
    "okx/rest_instruments_SWAP_2022-05-13.json",
    "okx/rest_instruments_SWAP_2025.json",
    "okx/ws_subscribe_acks_public_2022-05-13.log",
    "okx/ws_candle1m_BTC-USDT-SWAP_7fields_2022-09-09.json",
    "okx/ws_candle1D_BTC-USDT_docs.json",
    *DOUBTFUL,
}


def test_every_capture_is_checked() -> None:
    """A capture added to the corpus must get a check here, not be skipped silently."""
    files = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix in (".json", ".log")
    }
    assert files == COVERED
