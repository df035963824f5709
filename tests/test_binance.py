"""Binance USD-M specifics: the traps of ../shared/PROTOCOLS.md section 4 that concern Binance."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from feedd.candle import Candle
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import binance
from feedd.exchanges.contract import Ignored, Stream, SubscribeAck, SubscribeRejected

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
BTC_1M = Stream("BTCUSDT", "1m")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().removesuffix("\n")


def test_trap1_klines_use_the_routed_market_path() -> None:
    url = binance.ws_url(binance.DEFAULT_WS_URL)
    assert url == "wss://fstream.binance.com/market/stream"
    assert url not in ("wss://fstream.binance.com/ws", "wss://fstream.binance.com/stream")


def test_trap3_heartbeat_is_protocol_ping_frames() -> None:
    assert binance.PING_INTERVAL_S is None and binance.ping_frame(1) is None
    with pytest.raises(ParseError):
        binance.parse_frame("ping")  # there is no text heartbeat on Binance


def test_trap4_closed_flag_is_k_x_boolean() -> None:
    [forming] = binance.parse_frame(fixture("ws_candle_forming.json"))
    assert isinstance(forming, Candle) and forming.closed is False
    frame = orjson.loads(fixture("ws_candle_closed.json"))
    frame["k"]["x"] = "true"
    with pytest.raises(ParseError):
        binance.parse_frame(orjson.dumps(frame).decode())


def test_trap4_rest_rows_close_by_server_time() -> None:
    row_open = 1772462040000
    body = orjson.dumps([orjson.loads(fixture("rest_klines.json"))[2]])
    [at_close] = binance.parse_klines(BTC_1M, 200, body, row_open + 60_000)
    [just_before] = binance.parse_klines(BTC_1M, 200, body, row_open + 59_999)
    assert at_close.closed is True and just_before.closed is False


def test_trap5_rest_is_ascending_and_stays_so() -> None:
    rows = orjson.loads(fixture("rest_klines.json"))
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # the venue's own order
    shuffled = orjson.dumps(list(reversed(rows)))
    candles = binance.parse_klines(BTC_1M, 200, shuffled, 1772462130000)
    assert [c.open_time for c in candles] == sorted(r[0] for r in rows)


def test_trap8_errors_are_wrapped_and_rest_errors_are_4xx() -> None:
    [rejected] = binance.parse_frame(fixture("ws_rejected.json"))
    assert rejected == SubscribeRejected("1", (), "2", "Invalid request: invalid stream")
    with pytest.raises(ExchangeError) as info:
        binance.parse_klines(BTC_1M, 400, fixture("rest_error.json").encode(), 0)
    assert info.value.code == "-1121" and not isinstance(info.value, RateLimited)
    with pytest.raises(RateLimited):
        binance.parse_klines(BTC_1M, 418, b"", 0)


def test_trap9_one_ack_per_request() -> None:
    assert binance.parse_frame(fixture("ws_ack.json")) == [SubscribeAck("1")]


def test_trap10_stream_names_are_lowercase() -> None:
    [request] = binance.subscribe_requests([Stream("BTCUSDT", "1m"), Stream("ETHUSDT", "1M")], 5)
    frame = orjson.loads(request.frame)
    assert frame == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@kline_1m", "ethusdt@kline_1M"],
        "id": 5,
    }


def test_symbols_that_are_not_ascii() -> None:
    """Binance lists ``币安人生USDT``: lowercasing leaves the Han base as it is, and the kline
    payload names the symbol as listed."""
    han = Stream("币安人生USDT", "1m")
    [request] = binance.subscribe_requests([han, BTC_1M], 1)
    assert orjson.loads(request.frame)["params"] == ["币安人生usdt@kline_1m", "btcusdt@kline_1m"]
    [candle] = binance.parse_frame(fixture("ws_candle_unicode.json"))
    assert isinstance(candle, Candle) and candle.symbol == "币安人生USDT" and candle.closed
    assert (candle.open, candle.volume, candle.trades) == ("0.1512300", "1284113", 185)
    [rest] = binance.kline_requests(han, 1772462040000, 1772462040000, 1772462130000)
    assert rest.query().startswith("symbol=%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT&interval=1m")
    info = {
        "symbols": [
            {
                "symbol": "币安人生USDT",
                "contractType": "PERPETUAL",
                "quoteAsset": "USDT",
                "status": "TRADING",
            }
        ]
    }
    page = binance.parse_instruments(200, orjson.dumps(info))
    assert page.symbols == ("币安人生USDT",)


def test_other_events_are_ignored_not_errors() -> None:
    assert binance.parse_frame(fixture("ws_agg_trade.json")) == [Ignored("event aggTrade")]
    assert binance.parse_frame(fixture("ws_list_subscriptions.json")) == [
        Ignored("reply to another request")
    ]
    with pytest.raises(ParseError):
        binance.parse_frame('{"e": 5}')  # an event that is no event name is garbage


def test_trap13_limits() -> None:
    assert binance.LIMITS.streams_per_connection <= 200
    assert binance.LIMITS.client_msgs_per_second <= 10


def test_trap14_connections_rotate_before_24_hours() -> None:
    assert binance.LIMITS.connection_lifetime_s == 24 * 3600


def test_combined_stream_payload_is_unwrapped() -> None:
    assert binance.parse_frame(fixture("ws_candle_combined.json")) == binance.parse_frame(
        fixture("ws_candle_closed.json")
    )


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_kline_weight_by_limit(limit: int, weight: int) -> None:
    assert binance.kline_weight(limit) == weight


def test_instruments_skip_settling_dated_and_tradfi() -> None:
    page = binance.parse_instruments(200, fixture("rest_instruments.json").encode())
    assert "ALPACAUSDT" not in page.symbols  # SETTLING = delisted perpetual
    assert "BTCUSDT_260327" not in page.symbols and "XAUUSDT" not in page.symbols
    assert page.symbols == ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT")


def test_used_weight_header() -> None:
    assert binance.used_weight({"x-mbx-used-weight-1m": "123"}) == 123
    assert binance.used_weight({"x-mbx-used-weight-1m": "12a"}) is None
