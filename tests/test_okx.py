"""OKX v5 SWAP specifics: the traps of ../shared/PROTOCOLS.md section 4 that concern OKX."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedd.candle import Candle
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import okx
from feedd.exchanges.contract import (
    ErrorEvent,
    Ignored,
    Notice,
    Pong,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
)
from feedd.intervals import MINUTE_MS

FIXTURES = Path(__file__).parent / "fixtures" / "okx"
BTC_1M = Stream("BTCUSDT", "1m")
NOW = 1772462130000


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().removesuffix("\n")


def load(name: str) -> Any:
    return orjson.loads(fixture(name))


def with_row(row: list[str]) -> str:
    return orjson.dumps(load("ws_candle_closed.json") | {"data": [row]}).decode()


# ----------------------------------------------------------------------------- trap 2: /business


def test_trap2_candles_live_on_business() -> None:
    url = okx.ws_url(okx.DEFAULT_WS_URL)
    assert url == "wss://ws.okx.com:8443/ws/v5/business" and "/public" not in url


def test_trap2_wrong_url_errors_are_reported() -> None:
    [rejected] = okx.parse_frame(fixture("ws_rejected.json"))
    assert isinstance(rejected, SubscribeRejected)
    assert (rejected.code, rejected.request_id, rejected.streams) == ("60018", "sub1", (BTC_1M,))
    [moved] = okx.parse_frame(fixture("ws_error_64001.json"))
    assert moved == ErrorEvent("64001", "This channel has been migrated to the '/business' URL.")


# ----------------------------------------------------------------------------- trap 3: heartbeat


def test_trap3_text_ping_and_pong() -> None:
    assert okx.ping_frame(1) == "ping"  # bare text, not the JSON string '"ping"'
    assert okx.parse_frame(fixture("ws_pong.txt")) == [Pong()]
    assert okx.parse_frame("ping") == [ServerPing("pong")]
    with pytest.raises(ParseError):
        okx.parse_frame('"pong"')  # only the raw text is a pong
    assert okx.PING_INTERVAL_S is not None and okx.PING_INTERVAL_S < 30
    assert okx.SILENCE_TIMEOUT_S > okx.PING_INTERVAL_S


def test_trap3_quoted_ping_error_is_not_a_rejection() -> None:
    assert okx.parse_frame(fixture("ws_error_60012.json")) == [
        ErrorEvent("60012", 'Illegal request: "ping"')
    ]


# ----------------------------------------------------------------------------- trap 4: confirm


def test_trap4_confirm_is_the_string_at_index_8() -> None:
    [closed] = okx.parse_frame(fixture("ws_candle_closed.json"))
    [forming] = okx.parse_frame(fixture("ws_candle_forming.json"))
    assert isinstance(closed, Candle) and isinstance(forming, Candle)
    assert (closed.closed, forming.closed) == (True, False)
    row = load("ws_candle_closed.json")["data"][0]
    for bad in (True, 1, "true", "2"):
        with pytest.raises(ParseError):
            okx.parse_frame(
                orjson.dumps(load("ws_candle_closed.json") | {"data": [[*row[:8], bad]]}).decode()
            )


def test_trap4_rest_closed_comes_from_confirm_not_the_clock() -> None:
    body = fixture("rest_klines.json").encode()
    early = okx.parse_klines(BTC_1M, 200, body, 0)
    late = okx.parse_klines(BTC_1M, 200, body, NOW + 3_600_000)
    assert [c.closed for c in early] == [c.closed for c in late] == [True, True, True, False]


def test_older_row_shapes() -> None:
    row = load("ws_candle_closed.json")["data"][0]
    [no_confirm] = okx.parse_frame(with_row(row[:8]))
    assert isinstance(no_confirm, Candle) and no_confirm.closed is False  # taken as forming
    with pytest.raises(ParseError):
        okx.parse_frame(fixture("ws_candle_7fields.json"))  # no quote volume to store


# ----------------------------------------------------------------------------- traps 5, 6, 7


def test_trap5_rest_newest_first_parsed_ascending() -> None:
    rows = load("rest_klines.json")["data"]
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    candles = okx.parse_klines(BTC_1M, 200, fixture("rest_klines.json").encode(), NOW)
    assert [c.open_time for c in candles] == sorted(int(r[0]) for r in rows)


def test_trap6_volume_is_base_never_contracts() -> None:
    row = load("ws_candle_closed.json")["data"][0]
    [candle] = okx.parse_frame(fixture("ws_candle_closed.json"))
    assert isinstance(candle, Candle)
    assert candle.volume == row[6] == "39.7542" and candle.volume != row[5]
    assert candle.quote_volume == row[7]
    [same] = okx.parse_frame(with_row([*row[:5], "garbage", *row[6:]]))
    assert same == candle  # index 5 is not even read


@pytest.mark.parametrize(
    ("canonical", "bar"),
    [
        ("6h", "6Hutc"),
        ("12h", "12Hutc"),
        ("1d", "1Dutc"),
        ("3d", "3Dutc"),
        ("1w", "1Wutc"),
        ("1M", "1Mutc"),
        ("1h", "1H"),
        ("4h", "4H"),
        ("1m", "1m"),
    ],
)
def test_trap7_utc_aligned_bars(canonical: str, bar: str) -> None:
    assert okx.INTERVALS[canonical] == bar
    [request] = okx.subscribe_requests([Stream("BTCUSDT", canonical)], 1)
    assert orjson.loads(request.frame)["args"] == [
        {"channel": "candle" + bar, "instId": "BTC-USDT-SWAP"}
    ]


def test_no_8h_bar() -> None:
    assert "8h" not in okx.INTERVALS


# ----------------------------------------------------------------------------- traps 8, 9


def test_trap8_errors_inside_http_200() -> None:
    with pytest.raises(ExchangeError) as info:
        okx.parse_klines(BTC_1M, 200, fixture("rest_error.json").encode(), NOW)
    assert info.value.code == "51001" and not isinstance(info.value, RateLimited)
    with pytest.raises(RateLimited):
        okx.parse_klines(BTC_1M, 200, fixture("rest_rate_limited.json").encode(), NOW)
    with pytest.raises(RateLimited):
        okx.parse_klines(BTC_1M, 429, fixture("rest_rate_limited.json").encode(), NOW)
    assert okx.parse_klines(BTC_1M, 200, b'{"code":"0","msg":"","data":[]}', NOW) == []


def test_trap9_one_ack_per_arg() -> None:
    eth = Stream("ETHUSDT", "1m")
    [request] = okx.subscribe_requests([BTC_1M, eth], 1)
    ack = load("ws_ack.json")
    acks = [
        okx.parse_frame(orjson.dumps(ack | {"arg": arg}).decode())
        for arg in orjson.loads(request.frame)["args"]
    ]
    assert acks == [[SubscribeAck("sub1", BTC_1M)], [SubscribeAck("sub1", eth)]]


def test_ack_without_id_names_its_stream() -> None:
    """Acks echo ``id`` only when the server supports it (2022 captures have none): the arg
    then says which stream was subscribed."""
    assert okx.parse_frame(fixture("ws_ack_no_id.json")) == [SubscribeAck(None, BTC_1M)]


def test_other_channels_and_events_are_ignored() -> None:
    assert okx.parse_frame(fixture("ws_ack_tickers.json")) == [Ignored("ack for channel tickers")]
    assert okx.parse_frame(fixture("ws_tickers.json")) == [Ignored("channel tickers")]
    assert okx.parse_frame(fixture("ws_unsubscribe_ack.json")) == [Ignored("event unsubscribe")]
    # A candle channel we never use is no channel of another kind: still an error.
    daily = load("ws_ack_no_id.json") | {"arg": {"channel": "candle1D", "instId": "BTC-USDT-SWAP"}}
    with pytest.raises(ParseError):
        okx.parse_frame(orjson.dumps(daily).decode())


# ----------------------------------------------------------------------------- trap 10: symbols


def test_trap10_symbols() -> None:
    assert okx.to_native("BTCUSDT") == "BTC-USDT-SWAP"
    assert okx.from_native("1000PEPE-USDT-SWAP") == "1000PEPEUSDT"
    assert okx.to_native("币安人生USDT") == "币安人生-USDT-SWAP"  # should OKX list one
    for bad in ("BTC-USDT", "BTC-USD-SWAP", "BTC-USDT-SWAP-X", "", "-USDT-SWAP", "btc-usdt-swap"):
        with pytest.raises(ParseError):
            okx.from_native(bad)
    spot = load("ws_candle_closed.json") | {"arg": {"channel": "candle1m", "instId": "BTC-USDT"}}
    with pytest.raises(ParseError):
        okx.parse_frame(orjson.dumps(spot).decode())


# ----------------------------------------------------------------------------- trap 12: paging


def test_trap12_windows_use_exclusive_after_and_before() -> None:
    start, end = NOW - 100 * MINUTE_MS, NOW - 31 * MINUTE_MS
    [request] = okx.kline_requests(BTC_1M, start, end, NOW)
    params = dict(request.params)
    assert params["after"] == str(end + 1) and params["before"] == str(start - 1)
    assert params["limit"] == "70" and params["bar"] == "1m"


def test_recent_windows_use_candles_and_old_ones_history() -> None:
    now = 1772462100000
    recent = okx.kline_requests(BTC_1M, now - 600 * MINUTE_MS, now - MINUTE_MS, now)
    assert {r.path for r in recent} == {"/api/v5/market/candles"}
    assert all(int(dict(r.params)["limit"]) <= 300 and r.weight == 1 for r in recent)
    old = okx.kline_requests(BTC_1M, now - 3000 * MINUTE_MS, now - 2000 * MINUTE_MS, now)
    assert {r.path for r in old} == {"/api/v5/market/history-candles"}
    assert all(int(dict(r.params)["limit"]) <= 100 and r.weight == 2 for r in old)


# ----------------------------------------------------------------------------- trap 13: limits


def test_trap13_limits() -> None:
    assert okx.LIMITS.subscribe_requests_per_hour == 480
    assert okx.LIMITS.connects_per_second == 3
    per_2s = okx.LIMITS.rest_weight_per_minute / 30
    assert per_2s / 1 <= 40 and per_2s / 2 <= 20  # candles and history-candles at full budget
    # Reconnecting one full connection costs few of the 480 hourly subscribe requests.
    streams = [Stream(f"S{i}USDT", "1m") for i in range(okx.LIMITS.streams_per_connection)]
    assert len(okx.subscribe_requests(streams, 1)) <= 2


def test_request_ids_are_short_alphanumerics() -> None:
    streams = [Stream(f"S{i}USDT", "1m") for i in range(1000)]
    for request in okx.subscribe_requests(streams, 10**20):
        assert re.fullmatch(r"[A-Za-z0-9]{1,32}", request.request_id)


def test_notice_64008_asks_for_rotation() -> None:
    [notice] = okx.parse_frame(fixture("ws_notice_64008.json"))
    assert isinstance(notice, Notice) and notice.reconnect is True and notice.code == "64008"
    other = load("ws_notice_64008.json") | {"code": "64009"}
    [quiet] = okx.parse_frame(orjson.dumps(other).decode())
    assert isinstance(quiet, Notice) and quiet.reconnect is False


def test_instruments_filter() -> None:
    page = okx.parse_instruments(200, fixture("rest_instruments.json").encode())
    # inverse BTC-USD, USDC-settled, suspended and the empty preopen row are skipped
    assert page.symbols == ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT") and page.next_cursor is None
    body = load("rest_instruments.json")
    body["data"] = [body["data"][1] | {"instId": ""}]
    assert okx.parse_instruments(200, orjson.dumps(body)).symbols == ("BTCUSDT",)  # instFamily
