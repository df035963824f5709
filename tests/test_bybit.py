"""Bybit v5 linear specifics: the traps of ../shared/PROTOCOLS.md section 4 that concern Bybit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from feedd.candle import Candle
from feedd.engine.instruments import fetch_instruments
from feedd.engine.rest import RestClient
from feedd.engine.stats import ExchangeStats
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import bybit
from feedd.exchanges.contract import (
    ErrorEvent,
    Ignored,
    Pong,
    Stream,
    SubscribeAck,
    SubscribeRejected,
)
from feedd.sim import SimSettings, open_simulator
from feedd.sim.instruments import bybit_instruments

FIXTURES = Path(__file__).parent / "fixtures" / "bybit"
BTC_1M = Stream("BTCUSDT", "1m")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().removesuffix("\n")


def load(name: str) -> Any:
    return orjson.loads(fixture(name))


def test_ws_url_path() -> None:
    assert bybit.ws_url(bybit.DEFAULT_WS_URL) == "wss://stream.bybit.com/v5/public/linear"


def test_intervals_offer_neither_8h_nor_3d() -> None:
    assert "8h" not in bybit.INTERVALS and "3d" not in bybit.INTERVALS
    assert (bybit.INTERVALS["1h"], bybit.INTERVALS["1d"], bybit.INTERVALS["1w"]) == ("60", "D", "W")
    assert bybit.INTERVALS["1M"] == "M" and bybit.INTERVALS["1m"] == "1"


# ----------------------------------------------------------------------------- trap 3: heartbeat


def test_trap3_client_sends_json_ping() -> None:
    assert orjson.loads(bybit.ping_frame(17) or "") == {"req_id": "ping-17", "op": "ping"}
    assert bybit.PING_INTERVAL_S == 20.0


def test_trap3_pong_is_op_ping_with_ret_msg_pong() -> None:
    assert bybit.parse_frame(fixture("ws_pong.json")) == [Pong()]
    assert bybit.parse_frame(fixture("ws_pong_op.json")) == [Pong()]
    frame = load("ws_pong.json") | {"success": False, "ret_msg": "error:invalid op"}
    assert bybit.parse_frame(orjson.dumps(frame).decode()) == [
        ErrorEvent("invalid op", "error:invalid op")
    ]
    # A subscribe ack is not a pong even though both are success:true replies.
    assert bybit.parse_frame(fixture("ws_ack.json")) == [SubscribeAck("sub1")]


# ----------------------------------------------------------------------------- trap 4: closed flag


def test_trap4_confirm_is_a_boolean() -> None:
    [forming] = bybit.parse_frame(fixture("ws_candle_forming.json"))
    assert isinstance(forming, Candle) and forming.closed is False
    frame = load("ws_candle_closed.json")
    frame["data"][0]["confirm"] = "true"
    with pytest.raises(ParseError):
        bybit.parse_frame(orjson.dumps(frame).decode())


def test_trap4_rest_rows_close_by_server_time() -> None:
    body = fixture("rest_klines.json").encode()
    newest = 1772462100000
    at_close = bybit.parse_klines(BTC_1M, 200, body, newest + 60_000)
    before = bybit.parse_klines(BTC_1M, 200, body, newest + 59_999)
    assert at_close[-1].closed is True and before[-1].closed is False
    assert all(c.closed for c in before[:-1])


# ----------------------------------------------------------------------------- trap 5: ordering


def test_trap5_rest_newest_first_parsed_ascending() -> None:
    rows = load("rest_klines.json")["result"]["list"]
    starts = [int(r[0]) for r in rows]
    assert starts == sorted(starts, reverse=True)  # the venue's own order
    candles = bybit.parse_klines(BTC_1M, 200, fixture("rest_klines.json").encode(), 1772462130000)
    assert [c.open_time for c in candles] == sorted(starts)


# ----------------------------------------------------------------------------- trap 8: errors


def test_trap8_errors_inside_http_200() -> None:
    with pytest.raises(ExchangeError) as info:
        bybit.parse_klines(BTC_1M, 200, fixture("rest_error.json").encode(), 0)
    assert info.value.code == "10001" and not isinstance(info.value, RateLimited)
    with pytest.raises(RateLimited) as limited:
        bybit.parse_klines(BTC_1M, 200, fixture("rest_rate_limited.json").encode(), 0)
    assert limited.value.code == "10006"


def test_trap8_http_403_is_a_ten_minute_ban() -> None:
    with pytest.raises(RateLimited) as info:
        bybit.parse_klines(BTC_1M, 403, b"access too frequent", 0)
    assert info.value.retry_after is not None and info.value.retry_after >= 600


def test_trap8_rejection_names_the_bad_topic() -> None:
    assert bybit.parse_frame(fixture("ws_rejected.json")) == [
        SubscribeRejected(
            "sub1",
            (Stream("FOOUSDT", "1m"),),
            "handler not found",
            "error:handler not found,topic:kline.1.FOOUSDT",
        )
    ]


def test_trap8_rejection_without_topic_fails_the_whole_request() -> None:
    frame = load("ws_rejected.json") | {"ret_msg": "error:invalid op"}
    [event] = bybit.parse_frame(orjson.dumps(frame).decode())
    assert event == SubscribeRejected("sub1", (), "invalid op", "error:invalid op")


def test_already_subscribed_is_harmless() -> None:
    # Decision: the named topic keeps flowing, so the request counts as acknowledged.
    assert bybit.parse_frame(fixture("ws_already_subscribed.json")) == [SubscribeAck("sub2")]


# ----------------------------------------------------------------------------- traps 9, 10


def test_trap9_one_ack_per_request() -> None:
    requests = bybit.subscribe_requests([BTC_1M, Stream("ETHUSDT", "1m")], 1)
    assert len(requests) == 1
    assert bybit.parse_frame(fixture("ws_ack.json")) == [SubscribeAck(requests[0].request_id)]


def test_trap10_topics_are_uppercase() -> None:
    [request] = bybit.subscribe_requests([BTC_1M, Stream("ETHUSDT", "1d")], 3)
    assert orjson.loads(request.frame) == {
        "req_id": "sub3",
        "op": "subscribe",
        "args": ["kline.1.BTCUSDT", "kline.D.ETHUSDT"],
    }
    frame = load("ws_candle_closed.json") | {"topic": "kline.1.btcusdt"}
    with pytest.raises(ParseError):
        bybit.parse_frame(orjson.dumps(frame).decode())


def test_push_interval_must_match_topic() -> None:
    frame = load("ws_candle_closed.json")
    frame["data"][0]["interval"] = "5"
    with pytest.raises(ParseError):
        bybit.parse_frame(orjson.dumps(frame).decode())


def test_every_data_item_is_a_candle_with_base_and_quote_volume() -> None:
    frame = load("ws_candle_closed.json")
    frame["data"].append(load("ws_candle_forming.json")["data"][0])
    first, second = bybit.parse_frame(orjson.dumps(frame).decode())
    assert isinstance(first, Candle) and isinstance(second, Candle)
    assert (first.volume, first.quote_volume) == ("49.215", "4636136.6655")
    assert (first.closed, second.closed) == (True, False)


def test_other_topics_and_replies_are_ignored_not_errors() -> None:
    status = '{"topic":"system.status","data":[],"ts":1772462100006}'
    assert bybit.parse_frame(status) == [Ignored("topic system.status")]
    trade = fixture("ws_public_trade.json")
    assert bybit.parse_frame(trade) == [Ignored("topic publicTrade.BTCUSDT")]
    unsubscribed = fixture("ws_unsubscribe_ack.json")
    assert bybit.parse_frame(unsubscribed) == [Ignored("reply to op unsubscribe")]
    # The linear ack of the docs carries no req_id: still an ack.
    assert bybit.parse_frame(fixture("ws_ack_no_req_id.json")) == [SubscribeAck(None)]
    with pytest.raises(ParseError):
        bybit.parse_frame('{"topic":7,"data":[]}')  # garbage stays garbage


# ----------------------------------------------------------------------------- trap 11: paging


def test_trap11_instruments_follow_the_cursor() -> None:
    first = bybit.instruments_request(None)
    assert dict(first.params) == {"category": "linear", "limit": "1000"}
    page = bybit.parse_instruments(200, fixture("rest_instruments_1.json").encode())
    assert page.next_cursor == "first%3D1000PEPEUSDT%26last%3DBTCUSDT-27MAR26"
    assert dict(bybit.instruments_request(page.next_cursor).params)["cursor"] == page.next_cursor
    # USDC perpetual and dated future filtered out; PreLaunch/Closed on page 2 too.
    assert page.symbols == ("1000PEPEUSDT", "BTCUSDT")
    last = bybit.parse_instruments(200, fixture("rest_instruments_2.json").encode())
    assert last.symbols == ("ETHUSDT",) and last.next_cursor is None
    body = load("rest_instruments_2.json")
    body["result"]["nextPageCursor"] = None
    assert bybit.parse_instruments(200, orjson.dumps(body)).next_cursor is None


# ----------------------------------------------------------------------------- trap 13: limits


def test_trap13_limits() -> None:
    assert bybit.LIMITS.connects_per_second == pytest.approx(500 / 300)
    # One connection's args must stay under 21,000 characters even with long symbols.
    streams = [Stream("1000000BABYDOGEUSDT", "12h")] * bybit.LIMITS.streams_per_connection
    requests = bybit.subscribe_requests(streams, 1)
    total = sum(len(orjson.dumps(orjson.loads(r.frame)["args"])) for r in requests)
    assert total <= 21_000
    assert all(len(r.streams) <= 10 for r in requests)


def test_kline_request_params() -> None:
    [request] = bybit.kline_requests(Stream("BTCUSDT", "1h"), 0, 3_600_000 * 9, 10**13)
    assert request.path == "/v5/market/kline"
    assert dict(request.params) == {
        "category": "linear",
        "symbol": "BTCUSDT",
        "interval": "60",
        "start": "0",
        "end": str(3_600_000 * 9),
        "limit": "10",
    }


def test_time_prefers_time_then_time_nano() -> None:
    body = load("rest_time.json")
    assert bybit.parse_time(200, orjson.dumps(body)) == 1688639403423
    del body["time"]
    assert bybit.parse_time(200, orjson.dumps(body)) == 1688639403423


# ------------------------------------------------------------------------- the cursor on the wire

#: nextPageCursor as Bybit sends it (PROTOCOLS.md section 7): already percent-encoded
CURSOR = "first%3DBIOUSDT%26last%3DBIOUSDT"


def test_cursor_goes_back_as_given() -> None:
    """Encoding it again would send ``first%253D…``, which names no page."""
    request = bybit.instruments_request(CURSOR)
    assert request.query() == f"category=linear&limit=1000&cursor={CURSOR}"
    assert bybit.instruments_request(None).query() == "category=linear&limit=1000"


async def test_cursor_pages_through_the_simulator_over_http() -> None:
    """The engine's fetch_instruments against the simulated venue on loopback: the sim's
    cursors look like Bybit's and it reads the query string as a server does."""
    settings = SimSettings(venues=(bybit.NAME,), universe_size=1500)
    async with open_simulator(settings) as sim, httpx.AsyncClient() as client:
        venue = sim.venues[bybit.NAME]
        stats = ExchangeStats(bybit.NAME)
        rest = RestClient(bybit, venue.rest_url, client, stats, logging.getLogger("test"))
        with trio.fail_after(30):
            listed = await fetch_instruments(bybit, rest)
        assert stats.rest_requests == 2  # 1500 symbols and a few others: two pages of 1000
        expected = {
            row["symbol"]
            for row in bybit_instruments(venue.market, 1500)
            if row["contractType"] == "LinearPerpetual" and row["settleCoin"] == "USDT"
        }
        assert listed == expected and len(listed) == 1500
        # The cursor the sim handed out has Bybit's shape.
        first = await client.get(venue.rest_url + "/v5/market/instruments-info?category=linear")
        cursor = first.json()["result"]["nextPageCursor"]
        assert cursor.startswith("first%3D") and "%26last%3D" in cursor
        # Encoded twice (what httpx's params= does to it), it names no page.
        twice = await client.get(
            venue.rest_url + "/v5/market/instruments-info",
            params={"category": "linear", "cursor": cursor},
        )
        assert twice.json()["retCode"] == 10001
