"""The exchange simulator, exercised the way feedd uses it: real WebSocket and HTTP clients on
loopback, under trio's autojump clock so sim minutes pass in no real time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events as wse

from feedd.sim import SimSettings, Simulator, open_simulator
from feedd.sim.__main__ import build_parser, parse_fault, settings_from
from feedd.sim.clock import DEFAULT_START_MS
from feedd.sim.market import Market
from feedd.sim.symbols import UNICODE_SYMBOL
from feedd.sim.venue import TruthCandle

T0 = DEFAULT_START_MS
MIN = 60_000
BN, BY, OK = "binance_futures", "bybit_futures", "okx_futures"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # pytest-trio runs a test under a Clock only when the test itself takes the fixture.
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def sim(clock: trio.testing.MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(SimSettings(speed=60.0)) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def recv(ws: trio_websocket.WebSocketConnection) -> Any:
    return orjson.loads(await ws.get_message())


async def recv_until(
    ws: trio_websocket.WebSocketConnection, pred: Callable[[Any], bool], limit: int = 500
) -> tuple[Any, list[Any]]:
    """The first message matching ``pred`` and every message before it."""
    seen = []
    for _ in range(limit):
        message = await recv(ws)
        if pred(message):
            return message, seen
        seen.append(message)
    raise AssertionError(f"no matching message in {limit}")


async def silent_for(ws: trio_websocket.WebSocketConnection, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        await ws.get_message()
        return False
    return True


async def drain(ws: trio_websocket.WebSocketConnection) -> None:
    while not await silent_for(ws, 0.01):
        pass


def ws_url(sim: Simulator, venue: str, path: str) -> str:
    return sim.venues[venue].ws_url + path


def rest(sim: Simulator, venue: str, path: str) -> str:
    return sim.venues[venue].rest_url + path


def binance_truth(k: dict[str, Any]) -> TruthCandle:
    return TruthCandle(k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["n"])


# ----------------------------------------------------------------------------- market


def test_market_is_deterministic_and_exact() -> None:
    a, b, c = Market(7), Market(7), Market(8)
    assert a.final("BTCUSDT", "1m", T0) == b.final("BTCUSDT", "1m", T0)
    assert a.final("BTCUSDT", "1m", T0) != c.final("BTCUSDT", "1m", T0)
    trades = a.trades("BTCUSDT", T0)
    bar = a.final("BTCUSDT", "1m", T0)
    assert 5 <= bar.trades <= 20 and bar.quote == sum(t.price * t.qty for t in trades)
    spec = a.spec("BTCUSDT")
    assert 80_000 < bar.close / 100 < 110_000 and spec.price(9417240) == "94172.40"
    assert 2_500 < a.final("ETHUSDT", "1m", T0).close / 100 < 4_000
    # a 5m candle aggregates its 1m candles; a forming one only trades so far
    five = a.final("BTCUSDT", "5m", T0)
    ones = [a.final("BTCUSDT", "1m", T0 + i * MIN) for i in range(5)]
    assert (five.open, five.close) == (ones[0].open, ones[-1].close)
    assert five.high == max(o.high for o in ones) and five.volume == sum(o.volume for o in ones)
    forming = a.candle("BTCUSDT", "1m", T0, T0 + 30_000)
    assert forming.trades == sum(1 for t in trades if t.time_ms <= T0 + 30_000)
    # consecutive candles join up: no jump beyond a fraction of a percent
    for i in range(30):
        prev, nxt = (
            a.final("BTCUSDT", "1m", T0 + i * MIN),
            a.final("BTCUSDT", "1m", T0 + (i + 1) * MIN),
        )
        assert abs(nxt.open - prev.close) < prev.close * 0.002


# ----------------------------------------------------------------------------- Binance WS


async def test_binance_subscribe_forming_then_closed_equals_truth(
    clock: trio.testing.MockClock, sim: Simulator
) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/stream")) as ws:
        params = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
        await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}))
        assert await recv(ws) == {"result": None, "id": 1}
        final, before = await recv_until(
            ws, lambda m: m["stream"] == "btcusdt@kline_1m" and m["data"]["k"]["x"]
        )
        forming = [m for m in before if m["stream"] == "btcusdt@kline_1m"]
        assert forming and not any(m["data"]["k"]["x"] for m in forming)
        data = final["data"]
        assert (
            list(data) == ["e", "E", "s", "k"] and data["e"] == "kline" and data["s"] == "BTCUSDT"
        )
        k = data["k"]
        assert list(k) == list("tTsifLochlvnxqVQB")
        assert k["T"] == k["t"] + MIN - 1 and k["i"] == "1m" and data["E"] >= k["T"]
        assert isinstance(k["f"], int) and k["L"] - k["f"] + 1 == k["n"]
        truth = sim.truth(BN, "BTCUSDT", "1m", k["t"], k["t"])
        assert truth == [binance_truth(k)]
        # the forming frames of that candle grow towards the final one
        same = [m["data"]["k"] for m in forming if m["data"]["k"]["t"] == k["t"]]
        assert all(f["n"] < k["n"] and f["o"] == k["o"] for f in same)


async def test_binance_raw_path_streams_and_list(
    clock: trio.testing.MockClock, sim: Simulator
) -> None:
    url = ws_url(sim, BN, "/market/ws/btcusdt@kline_1m")
    async with trio_websocket.open_websocket_url(url) as ws:
        frame = await recv(ws)
        assert frame["e"] == "kline" and frame["k"]["s"] == "BTCUSDT"
    url = ws_url(sim, BN, "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m")
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":7}')
        reply, _ = await recv_until(ws, lambda m: m.get("id") == 7)
        assert reply == {"result": ["btcusdt@kline_1m", "ethusdt@kline_5m"], "id": 7}
        await ws.send_message('{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":8}')
        await recv_until(ws, lambda m: m == {"result": None, "id": 8})
        five, _ = await recv_until(ws, lambda m: "stream" in m and m["data"]["k"]["x"])
        assert five["stream"] == "ethusdt@kline_5m" and five["data"]["k"]["i"] == "5m"
        k = five["data"]["k"]
        assert sim.truth(BN, "ETHUSDT", "5m", k["t"], k["t"]) == [binance_truth(k)]


async def test_binance_streams_a_symbol_that_is_not_ascii(
    clock: trio.testing.MockClock, sim: Simulator
) -> None:
    """The stream name lowercases the symbol (a Han name has no case); the payload and REST
    use the listed name."""
    name = UNICODE_SYMBOL.lower() + "@kline_1m"
    assert name == "币安人生usdt@kline_1m"
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/stream")) as ws:
        upper = [UNICODE_SYMBOL + "@kline_1m"]  # not a stream name: Binance's are lowercase
        await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": upper, "id": 1}))
        assert (await recv(ws))["error"]["code"] == 2
        await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": [name], "id": 2}))
        assert await recv(ws) == {"result": None, "id": 2}
        final, _ = await recv_until(ws, lambda m: m["data"]["k"]["x"])
    assert final["stream"] == name and final["data"]["s"] == final["data"]["k"]["s"]
    k = final["data"]["k"]
    assert k["s"] == UNICODE_SYMBOL
    assert sim.truth(BN, UNICODE_SYMBOL, "1m", k["t"], k["t"]) == [binance_truth(k)]
    async with httpx.AsyncClient() as http:
        params = {"symbol": UNICODE_SYMBOL, "interval": "1m", "startTime": k["t"], "limit": 1}
        [row] = (await http.get(rest(sim, BN, "/fapi/v1/klines"), params=params)).json()
        assert row[0] == k["t"] and row[1:6] == [k["o"], k["h"], k["l"], k["c"], k["v"]]
        # Bybit does not list it: its REST refuses the symbol.
        params = {"category": "linear", "symbol": UNICODE_SYMBOL, "interval": "1"}
        refused = (await http.get(rest(sim, BY, "/v5/market/kline"), params=params)).json()
        assert refused["retCode"] == 10001


async def test_binance_legacy_root_acks_but_sends_no_klines(
    clock: trio.testing.MockClock, sim: Simulator
) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/ws")) as ws:
        await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}')
        assert await recv(ws) == {"result": None, "id": 1}
        assert await silent_for(ws, 150.0)  # two and a half sim hours
    with pytest.raises(trio_websocket.HandshakeError):
        async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/private/ws")):
            pass


async def test_binance_request_errors(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/ws")) as ws:
        await ws.send_message("ping")
        reply = await recv(ws)
        assert reply["error"]["code"] == 3 and reply["id"] is None
        await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"]}')
        assert (await recv(ws))["error"]["code"] == 2
        await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":-1}')
        assert (await recv(ws))["error"]["code"] == 2
        await ws.send_message('{"method":"FETCH","id":4}')
        reply = await recv(ws)
        assert reply["error"]["code"] == 2 and reply["id"] == 4
        assert reply["error"]["msg"].startswith("Invalid request: ")
        # one bad stream fails the whole request: the good one is not subscribed either
        params = ["btcusdt@kline_1m", "btcusdt@kline_7m"]
        await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 5}))
        assert (await recv(ws))["error"]["code"] == 2
        await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":6}')
        assert await recv(ws) == {"result": [], "id": 6}
        await ws.send_message('{"method":"SET_PROPERTY","params":["combined",1],"id":7}')
        assert (await recv(ws))["error"]["code"] == 1
        await ws.send_message('{"method":"SET_PROPERTY","params":["combined",true],"id":8}')
        assert await recv(ws) == {"result": None, "id": 8}
        await ws.send_message('{"method":"GET_PROPERTY","params":["combined"],"id":9}')
        assert await recv(ws) == {"result": True, "id": 9}


async def test_binance_stream_cap_and_message_rate(clock: trio.testing.MockClock) -> None:
    settings = SimSettings(max_streams=3, max_inbound_per_s=5)
    async with open_simulator(settings) as sim:
        async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/ws")) as ws:
            params = [f"s{i}usdt@kline_1m" for i in range(4)]
            await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}))
            assert "too many streams" in (await recv(ws))["error"]["msg"]
            for i in range(6):  # the sixth message within a second is one too many
                await ws.send_message(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1006
        assert sim.venues[BN].stats["rate_limit_drops"] == 1


async def test_binance_server_pings(clock: trio.testing.MockClock) -> None:
    async with open_simulator(SimSettings(ping_interval_s=2.0)) as sim:
        async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/ws")) as ws:
            assert await silent_for(ws, 7.0)  # trio-websocket answers the pings by itself
            assert sim.venues[BN].stats["pings"] == 3 and not ws.closed
            stats = sim.venues[BN].stats
        assert stats["pong_timeouts"] == 0


async def test_binance_drops_a_client_that_never_pongs(clock: trio.testing.MockClock) -> None:
    # A raw wsproto client, so that pings stay unanswered and we see exactly what arrives.
    async with open_simulator(SimSettings(ping_interval_s=1.0, pong_timeout_s=3.0)) as sim:
        port = int(sim.venues[BN].ws_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(wse.Request(host="127.0.0.1", target="/market/ws")))
        events: list[wse.Event] = []
        start = trio.current_time()
        with trio.fail_after(30):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""  # connection reset
                if not data:
                    break
                ws.receive_data(data)
                events += ws.events()
        await stream.aclose()
        assert isinstance(events[0], wse.AcceptConnection)
        assert [type(e) for e in events[1:]] == [wse.Ping] * 3  # and no close frame
        assert trio.current_time() - start == pytest.approx(4.0, abs=0.1)
        assert sim.venues[BN].stats["pong_timeouts"] == 1


# ----------------------------------------------------------------------------- Binance REST


async def test_binance_rest_klines(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    await sim.sleep_until_ms(T0 + 10 * MIN + 30_000)
    url = rest(sim, BN, "/fapi/v1/klines")
    r = await http.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": 5})
    rows = r.json()
    assert r.status_code == 200 and r.headers["x-mbx-used-weight-1m"] == "1"
    assert [row[0] for row in rows] == [T0 + (6 + i) * MIN for i in range(5)]  # ascending
    assert rows[-1][6] == T0 + 11 * MIN - 1 and rows[-1][6] > sim.now_ms()  # still forming
    assert all(len(row) == 12 and isinstance(row[8], int) for row in rows)
    truth = sim.truth(BN, "BTCUSDT", "1m", T0 - 30 * MIN, T0 + 20 * MIN)
    assert len(truth) == 40  # closed only
    # page forward from a start time, as feedd's backfill does
    got: list[TruthCandle] = []
    start, end = T0 - 30 * MIN, T0 + 10 * MIN - 1
    while start <= end:
        params = {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "startTime": start,
            "endTime": end,
            "limit": 15,
        }
        page = (await http.get(url, params=params)).json()
        got += [TruthCandle(p[0], *p[1:6], p[7], p[8]) for p in page]
        start = page[-1][0] + MIN
    assert got == truth
    # endTime alone: the rows ending there; 5m rows aggregate the 1m truth
    params = {"symbol": "BTCUSDT", "interval": "5m", "endTime": T0 + 5 * MIN, "limit": 2}
    rows = (await http.get(url, params=params)).json()
    assert [row[0] for row in rows] == [T0, T0 + 5 * MIN]
    five = sim.truth(BN, "BTCUSDT", "5m", T0, T0)[0]
    assert rows[0][1:6] == [five.open, five.high, five.low, five.close, five.volume]
    # history starts 30 days before the sim start; long intervals aggregate the same trades
    params = {"symbol": "BTCUSDT", "interval": "1d", "startTime": 0, "limit": 1500}
    days = (await http.get(url, params=params)).json()
    assert days[0][0] == T0 - 30 * 86_400_000 + 570 * MIN  # the first whole day after it
    assert len(days) == 30 and days[-1][6] > sim.now_ms()
    day = sim.truth(BN, "BTCUSDT", "1m", days[-2][0], days[-2][6])
    assert days[-2][5] == str(sum(Decimal(c.volume) for c in day)) and len(day) == 1440


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "FOOUSDC", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "1s"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1501}, -1130),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "x"}, -1100),
    ],
)
async def test_binance_rest_errors(
    clock: trio.testing.MockClock,
    sim: Simulator,
    http: httpx.AsyncClient,
    params: dict[str, Any],
    code: int,
) -> None:
    r = await http.get(rest(sim, BN, "/fapi/v1/klines"), params=params)
    assert r.status_code == 400 and r.json()["code"] == code


async def test_binance_rest_time_info_and_weight(clock: trio.testing.MockClock) -> None:
    async with (
        open_simulator(SimSettings(rest_weight_per_minute=11)) as sim,
        httpx.AsyncClient() as http,
    ):
        r = await http.get(rest(sim, BN, "/fapi/v1/time"))
        assert abs(r.json()["serverTime"] - sim.now_ms()) < 100
        info = (await http.get(rest(sim, BN, "/fapi/v1/exchangeInfo"))).json()
        tradable = [
            s["symbol"]
            for s in info["symbols"]
            if s["contractType"] == "PERPETUAL"
            and s["quoteAsset"] == "USDT"
            and s["status"] == "TRADING"
        ]
        assert len(tradable) == 601 and len(info["symbols"]) > 601 and "BTCUSDT" in tradable
        assert tradable[600] == UNICODE_SYMBOL  # Binance lists non-ASCII names too
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}  # weight 5
        r = await http.get(rest(sim, BN, "/fapi/v1/klines"), params=params)
        assert r.headers["x-mbx-used-weight-1m"] == "7"
        r = await http.get(rest(sim, BN, "/fapi/v1/klines"), params=params)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        await sim.sleep_until_ms((sim.now_ms() // MIN + 1) * MIN)  # the budget is per minute
        r = await http.get(rest(sim, BN, "/fapi/v1/klines"), params=params)
        assert r.status_code == 200 and r.headers["x-mbx-used-weight-1m"] == "5"


# ----------------------------------------------------------------------------- Bybit


async def test_bybit_ws(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, BY, "/v5/public/linear")) as ws:
        await ws.send_message('{"req_id":"p1","op":"ping"}')
        pong = await recv(ws)
        assert pong == {
            "success": True,
            "ret_msg": "pong",
            "conn_id": pong["conn_id"],
            "req_id": "p1",
            "op": "ping",
        }
        bad = ["kline.1.BTCUSDT", "kline.1.FOOUSDC"]
        await ws.send_message(orjson.dumps({"req_id": "s1", "op": "subscribe", "args": bad}))
        reply = await recv(ws)
        assert reply["success"] is False and reply["req_id"] == "s1"
        assert reply["ret_msg"] == "error:handler not found,topic:kline.1.FOOUSDC"
        assert await silent_for(ws, 2.0)  # nothing of the failed request was subscribed
        await ws.send_message('{"req_id":"s2","op":"subscribe","args":["kline.1.BTCUSDT"]}')
        assert await recv(ws) == {
            "success": True,
            "ret_msg": "",
            "conn_id": pong["conn_id"],
            "req_id": "s2",
            "op": "subscribe",
        }
        await ws.send_message('{"req_id":"s3","op":"subscribe","args":["kline.1.BTCUSDT"]}')
        dup, _ = await recv_until(ws, lambda m: m.get("req_id") == "s3")
        assert dup["ret_msg"] == "error:already subscribed,topic:kline.1.BTCUSDT"
        final, before = await recv_until(ws, lambda m: "topic" in m and m["data"][0]["confirm"])
        assert any("topic" in m for m in before)
        assert set(final) == {"topic", "data", "ts", "type"} and final["type"] == "snapshot"
        d = final["data"][0]
        assert list(d) == [
            "start",
            "end",
            "interval",
            "open",
            "close",
            "high",
            "low",
            "volume",
            "turnover",
            "confirm",
            "timestamp",
        ]
        assert d["end"] == d["start"] + MIN - 1 and d["interval"] == "1"
        truth = TruthCandle(
            d["start"], d["open"], d["high"], d["low"], d["close"], d["volume"], d["turnover"], None
        )
        assert sim.truth(BY, "BTCUSDT", "1m", d["start"], d["start"]) == [truth]


async def test_bybit_args_limit(clock: trio.testing.MockClock, sim: Simulator) -> None:
    topics = [f"kline.1.S{i}USDT" for i in range(2000)]  # > 21,000 characters
    async with trio_websocket.open_websocket_url(ws_url(sim, BY, "/v5/public/linear")) as ws:
        await ws.send_message(orjson.dumps({"op": "subscribe", "args": topics}).decode())
        reply = await recv(ws)
        assert reply["success"] is False and "21000" in reply["ret_msg"]
        await ws.send_message(orjson.dumps({"op": "subscribe", "args": topics[:100]}).decode())
        assert (await recv(ws))["success"] is True


async def test_bybit_idle_cut(clock: trio.testing.MockClock) -> None:
    async with (
        open_simulator(SimSettings(bybit_idle_s=5.0)) as sim,
        trio_websocket.open_websocket_url(ws_url(sim, BY, "/v5/public/linear")) as ws,
    ):
        start = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert trio.current_time() - start == pytest.approx(5.0, abs=0.1)


async def test_bybit_rest(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    await sim.sleep_until_ms(T0 + 3 * MIN + 1)
    url = rest(sim, BY, "/v5/market/kline")
    body = (
        await http.get(
            url, params={"category": "linear", "symbol": "BTCUSDT", "interval": "1", "limit": 4}
        )
    ).json()
    assert (
        body["retCode"] == 0
        and body["retMsg"] == "OK"
        and set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    )
    rows = body["result"]["list"]
    assert [r[0] for r in rows] == [str(T0 + i * MIN) for i in (3, 2, 1, 0)]  # newest first
    assert all(isinstance(x, str) for r in rows for x in r) and len(rows[0]) == 7
    # page backwards with end = oldest start - 1
    got: list[TruthCandle] = []
    end = T0 + 3 * MIN - 1
    while len(got) < 25:
        params = {
            "category": "linear",
            "symbol": "BTCUSDT",
            "interval": "1",
            "end": end,
            "limit": 10,
        }
        page = (await http.get(url, params=params)).json()["result"]["list"]
        got += [TruthCandle(int(r[0]), *r[1:7], None) for r in page]
        end = int(page[-1][0]) - 1
    assert got[::-1] == sim.truth(BY, "BTCUSDT", "1m", int(got[-1].open_time), T0 + 2 * MIN)
    bad = await http.get(url, params={"category": "linear", "symbol": "FOOUSDC", "interval": "1"})
    assert bad.status_code == 200 and bad.json()["retCode"] == 10001
    t = (await http.get(rest(sim, BY, "/v5/market/time"))).json()
    assert abs(int(t["result"]["timeSecond"]) - sim.now_ms() // 1000) <= 1
    assert t["result"]["timeNano"].startswith(t["result"]["timeSecond"])


async def test_bybit_instruments_paging(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    url = rest(sim, BY, "/v5/market/instruments-info")
    cursor, pages, tradable = "", 0, []
    while True:
        # The cursor arrives percent-encoded and goes back as given, as Bybit's client does.
        query = "?category=linear" + (f"&cursor={cursor}" if cursor else "")
        result = (await http.get(url + query)).json()["result"]
        assert not cursor or (cursor.startswith("first%3D") and "%26last%3D" in cursor)
        pages += 1
        assert len(result["list"]) <= 500
        tradable += [
            i["symbol"]
            for i in result["list"]
            if i["contractType"] == "LinearPerpetual"
            and i["settleCoin"] == "USDT"
            and i["status"] == "Trading"
        ]
        cursor = result["nextPageCursor"]
        if not cursor:
            break
    assert pages == 2 and len(tradable) == 600 and len(set(tradable)) == 600


# ----------------------------------------------------------------------------- OKX


async def test_okx_ws(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, OK, "/ws/v5/business")) as ws:
        await ws.send_message("ping")
        assert await ws.get_message() == "pong"
        await ws.send_message('"ping"')
        assert (await recv(ws))["code"] == "60012"
        args = [
            {"channel": "candle1m", "instId": "BTC-USDT-SWAP"},
            {"channel": "candle1m", "instId": "FOO-USDC-SWAP"},
            {"channel": "candle1m", "instId": "ETH-USDT-SWAP"},
        ]
        await ws.send_message(orjson.dumps({"id": "k1", "op": "subscribe", "args": args}))
        acks = [await recv(ws) for _ in range(3)]  # one frame per arg
        conn = acks[0]["connId"]
        assert acks[0] == {"id": "k1", "event": "subscribe", "arg": args[0], "connId": conn}
        assert acks[1]["event"] == "error" and acks[1]["code"] == "60018"
        assert acks[2]["arg"] == args[2]
        final, _ = await recv_until(ws, lambda m: "data" in m and m["data"][0][8] == "1")
        row = final["data"][0]
        assert len(row) == 9 and all(isinstance(x, str) for x in row)
        assert set(final["arg"]) == {"channel", "instId"}
        symbol = final["arg"]["instId"].replace("-USDT-SWAP", "USDT")
        truth = sim.truth(OK, symbol, "1m", int(row[0]), int(row[0]))
        assert truth == [TruthCandle(int(row[0]), *row[1:5], row[6], row[7], None)]
        # index 5 is contracts of 0.01 base
        assert float(row[5]) == pytest.approx(float(row[6]) * 100)
    async with trio_websocket.open_websocket_url(ws_url(sim, OK, "/ws/v5/public")) as ws:
        await ws.send_message(orjson.dumps({"op": "subscribe", "args": args[:1]}))
        reply = await recv(ws)
        assert reply == {
            "event": "error",
            "code": "60018",
            "msg": (
                "Wrong URL or channel:candle1m,instId:BTC-USDT-SWAP doesn't exist. Please use the "
                "correct URL, channel and parameters referring to API document."
            ),
            "connId": reply["connId"],
        }


async def test_okx_subscribe_budget(clock: trio.testing.MockClock) -> None:
    async with open_simulator(SimSettings(okx_requests_per_hour=2)) as sim:
        url = ws_url(sim, OK, "/ws/v5/business")
        async with trio_websocket.open_websocket_url(url) as ws:
            arg = {"channel": "candle1m", "instId": "BTC-USDT-SWAP"}
            for op in ("subscribe", "unsubscribe", "subscribe"):
                await ws.send_message(orjson.dumps({"op": op, "args": [arg]}).decode())
            replies, _ = await recv_until(ws, lambda m: m.get("event") == "error")
            assert replies["code"] == "60014"


async def test_okx_idle_close_4004(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, OK, "/ws/v5/business")) as ws:
        start = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 4004
        assert trio.current_time() - start == pytest.approx(30.0, abs=0.1)


async def test_okx_rest(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    await sim.sleep_until_ms(T0 + 5 * MIN + 1)
    url = rest(sim, OK, "/api/v5/market/candles")
    base = {"instId": "BTC-USDT-SWAP", "bar": "1m"}

    async def opens(**params: Any) -> list[int]:
        body = (await http.get(url, params={**base, **params})).json()
        assert body["code"] == "0" and body["msg"] == ""
        return [int(r[0]) for r in body["data"]]

    assert await opens(limit=3) == [T0 + 5 * MIN, T0 + 4 * MIN, T0 + 3 * MIN]  # newest first
    assert await opens(after=T0 + 2 * MIN, limit=2) == [T0 + MIN, T0]  # older than after
    # before alone returns the latest rows, not the ones right after it
    assert await opens(before=T0 - 100 * MIN, limit=2) == [T0 + 5 * MIN, T0 + 4 * MIN]
    assert await opens(after=T0 + 3 * MIN, before=T0 - 1) == [T0 + 2 * MIN, T0 + MIN, T0]
    # the oldest row candles serves is current - 1439 bars = T0 - 1434 min
    assert await opens(after=T0 - 1432 * MIN) == [T0 - 1433 * MIN, T0 - 1434 * MIN]
    assert await opens(after=T0 - 2000 * MIN) == []  # candles keeps the latest 1440 only
    hist = rest(sim, OK, "/api/v5/market/history-candles")
    body = (await http.get(hist, params={**base, "after": T0 - 2000 * MIN, "limit": 100})).json()
    assert len(body["data"]) == 100 and body["data"][0][8] == "1"
    first = (await http.get(url, params={**base, "limit": 1})).json()["data"][0]
    assert first[8] == "0"  # the forming candle leads
    over = (await http.get(hist, params={**base, "limit": 101})).json()
    assert over["code"] == "51000"
    bad = (await http.get(url, params={"instId": "FOO-USDC-SWAP"})).json()
    assert bad == {"code": "51001", "msg": "Instrument ID does not exist.", "data": []}
    t = (await http.get(rest(sim, OK, "/api/v5/public/time"))).json()
    assert t["code"] == "0" and abs(int(t["data"][0]["ts"]) - sim.now_ms()) < 100
    inst = (
        await http.get(rest(sim, OK, "/api/v5/public/instruments"), params={"instType": "SWAP"})
    ).json()["data"]
    live = [
        i
        for i in inst
        if i["ctType"] == "linear" and i["settleCcy"] == "USDT" and i["state"] == "live"
    ]
    assert len(live) == 600 and {i["state"] for i in inst} == {"live", "suspend", "preopen"}
    assert any(i["instId"] == "BTC-USD-SWAP" and i["ctType"] == "inverse" for i in inst)


# ----------------------------------------------------------------------------- faults


async def test_fault_drop_connections(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(
        ws_url(sim, BN, "/market/ws/btcusdt@kline_1m")
    ) as ws:
        await recv(ws)
        assert sim.venues[BN].faults.drop_connections() == 1
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1006  # no close frame
    assert sim.venues[BN].stats["ws_aborted"] == 1


async def test_fault_stall_and_stall_symbol(clock: trio.testing.MockClock, sim: Simulator) -> None:
    faults = sim.venues[BN].faults
    url = ws_url(sim, BN, "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")
    async with trio_websocket.open_websocket_url(url) as ws:
        await recv(ws)
        faults.stall(seconds=5.0)
        await drain(ws)  # frames already on the wire
        assert await silent_for(ws, 4.8)
        await recv(ws)  # the stall ends by itself
        faults.stall_symbol("ETHUSDT")
        await drain(ws)
        streams = {(await recv(ws))["stream"] for _ in range(20)}
        assert streams == {"btcusdt@kline_1m"}
        faults.clear_symbol_stall("ETHUSDT")
        await recv_until(ws, lambda m: m["stream"] == "ethusdt@kline_1m")
        faults.stall()
        await drain(ws)
        assert await silent_for(ws, 30.0)
        faults.clear_stall()
        await recv(ws)


async def test_fault_garbage(clock: trio.testing.MockClock, sim: Simulator) -> None:
    async with trio_websocket.open_websocket_url(ws_url(sim, BY, "/v5/public/linear")) as ws:
        sim.venues[BY].faults.send_garbage("truncated")
        text = await ws.get_message()
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(text)
        sim.venues[BY].faults.send_garbage("wrong_types")
        assert isinstance((await recv(ws))["topic"], int)


async def test_fault_reject_symbol(clock: trio.testing.MockClock, sim: Simulator) -> None:
    for venue in (BN, BY, OK):
        sim.venues[venue].faults.reject_symbol("ETHUSDT")
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/ws")) as ws:
        await ws.send_message('{"method":"SUBSCRIBE","params":["ethusdt@kline_1m"],"id":1}')
        assert (await recv(ws))["error"]["code"] == 2
    async with trio_websocket.open_websocket_url(ws_url(sim, BY, "/v5/public/linear")) as ws:
        await ws.send_message('{"op":"subscribe","args":["kline.1.BTCUSDT","kline.1.ETHUSDT"]}')
        assert (await recv(ws))["ret_msg"] == "error:handler not found,topic:kline.1.ETHUSDT"
        assert await silent_for(ws, 2.0)
    async with trio_websocket.open_websocket_url(ws_url(sim, OK, "/ws/v5/business")) as ws:
        arg = {"channel": "candle1m", "instId": "ETH-USDT-SWAP"}
        await ws.send_message(orjson.dumps({"op": "subscribe", "args": [arg]}))
        assert (await recv(ws))["code"] == "60018"


async def test_fault_lifetime_and_okx_notice(clock: trio.testing.MockClock, sim: Simulator) -> None:
    sim.venues[BN].faults.set_lifetime(10.0)
    async with trio_websocket.open_websocket_url(ws_url(sim, BN, "/market/ws")) as ws:
        start = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1001
        assert trio.current_time() - start == pytest.approx(10.0, abs=1.0)
    async with trio_websocket.open_websocket_url(ws_url(sim, OK, "/ws/v5/business")) as ws:
        sim.venues[OK].faults.announce_close(after_s=3.0)
        notice = await recv(ws)
        assert notice == {
            "event": "notice",
            "code": "64008",
            "msg": ("The connection will soon be closed for a service upgrade. Please reconnect."),
            "connId": notice["connId"],
        }
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()


async def test_fault_skip_and_duplicate_final(
    clock: trio.testing.MockClock, sim: Simulator
) -> None:
    faults = sim.venues[BN].faults
    async with trio_websocket.open_websocket_url(
        ws_url(sim, BN, "/market/ws/btcusdt@kline_1m")
    ) as ws:
        await recv(ws)
        faults.skip_final("BTCUSDT")
        faults.duplicate_final("BTCUSDT")
        finals = []
        while len(finals) < 3:
            k = (await recv(ws))["k"]
            if k["x"]:
                finals.append(k["t"])
    skipped = finals[0] - MIN  # the candle whose close went missing
    assert finals[0] == finals[1] and finals[2] == finals[0] + MIN
    assert len(sim.truth(BN, "BTCUSDT", "1m", skipped, skipped)) == 1  # REST still has it


async def test_fault_rest(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    sim.venues[BN].faults.rest_throttle(1, status=418, retry_after_s=7)
    r = await http.get(rest(sim, BN, "/fapi/v1/time"))
    assert r.status_code == 418 and r.headers["retry-after"] == "7"
    assert (await http.get(rest(sim, BN, "/fapi/v1/time"))).status_code == 200
    sim.venues[BY].faults.rest_throttle(1)
    r = await http.get(rest(sim, BY, "/v5/market/time"))
    assert r.status_code == 403 and r.text == "access too frequent"
    sim.venues[BY].faults.rest_error(1)
    r = await http.get(rest(sim, BY, "/v5/market/time"))
    assert r.status_code == 200 and r.json()["retCode"] != 0
    sim.venues[OK].faults.rest_throttle(1)
    r = await http.get(rest(sim, OK, "/api/v5/public/time"))
    assert r.status_code == 429 and r.json()["code"] == "50011"
    sim.venues[OK].faults.rest_error(1)
    r = await http.get(rest(sim, OK, "/api/v5/public/time"))
    assert r.status_code == 200 and r.json()["code"] != "0"


# ----------------------------------------------------------------------------- control, bench, CLI


async def test_http_control(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    await sim.sleep_until_ms(T0 + 3 * MIN)
    t = (await http.get(rest(sim, OK, "/_sim/time"))).json()
    assert abs(t["sim_ms"] - sim.now_ms()) < 100 and t["speed"] == 60.0
    params = {"symbol": "BTCUSDT", "interval": "1m", "start": T0, "end": T0 + 9 * MIN}
    rows = (await http.get(rest(sim, OK, "/_sim/truth"), params=params)).json()
    assert [TruthCandle(**r) for r in rows] == sim.truth(OK, "BTCUSDT", "1m", T0, T0 + 9 * MIN)
    assert len(rows) == 3
    r = await http.post(rest(sim, BY, "/_sim/fault"), json={"action": "rest_throttle", "count": 1})
    assert r.json()["ok"] is True
    assert (await http.get(rest(sim, BY, "/v5/market/time"))).status_code == 403
    r = await http.post(rest(sim, BY, "/_sim/fault"), json={"action": "explode"})
    assert r.status_code == 400
    stats = (await http.get(rest(sim, BY, "/_sim/stats"))).json()
    assert stats["rest_faults"] == 1


async def test_bench_mode_logs_send_times(clock: trio.testing.MockClock) -> None:
    async with open_simulator(SimSettings(bench=True, bench_rate=1000.0)) as sim:
        url = ws_url(sim, BN, "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")
        async with trio_websocket.open_websocket_url(url) as ws:
            frames = [(await recv(ws))["data"]["k"] for _ in range(200)]
        log = sim.venues[BN].send_log.as_dict()
        assert not sim.venues[BY].send_log.as_dict()  # each venue logs only its own frames
        assert all((k["s"], k["t"], k["c"]) in log for k in frames)
        assert len({(k["s"], k["t"], k["c"]) for k in frames}) == 200
        assert sim.venues[BN].stats["bench_frames"] >= 200


def test_cli_parsing() -> None:
    fault = parse_fault("okx_futures:stall:seconds=5@20/60")
    assert (fault.venue, fault.spec, fault.at_s, fault.every_s) == (
        "okx_futures",
        {"action": "stall", "seconds": 5},
        20.0,
        60.0,
    )
    args = build_parser().parse_args(["--speed", "60", "--rate", "30000", "--symbols", "600"])
    settings = settings_from(args)
    assert settings.bench and settings.bench_rate == 30000 and settings.universe_size == 600
    assert settings.start_ms is None  # the CLI starts at the wall clock


async def test_cli_prints_urls() -> None:
    argv = [sys.executable, "-m", "feedd.sim", "--venues", "binance_futures,okx_futures"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        buf = b""
        while buf.count(b"\n") < 2:
            buf += await proc.stdout.receive_some(4096)
        lines = [orjson.loads(line) for line in buf.splitlines()]
        assert [line["exchange"] for line in lines] == [BN, OK]
        assert lines[0]["ws_url"].startswith("ws://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            r = await http.get(lines[0]["rest_url"] + "/fapi/v1/time")
            assert r.status_code == 200
            assert lines[0]["archive_url"] == lines[0]["rest_url"] + "/archive"
            assert "archive_url" not in lines[1]
    finally:
        proc.terminate()
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
