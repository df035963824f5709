"""Bybit v5 linear (USDT perpetuals), sans-IO: ``/v5/public/linear`` topics, JSON ping, REST klines.

Protocol facts: ../shared/PROTOCOLS.md section 2 (and the traps of section 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feedd.candle import Candle, Source
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import fields as f
from feedd.exchanges.common import batched, ohlcv_candle, page_windows, parse_guard
from feedd.exchanges.contract import (
    ArchiveLayout,
    ErrorEvent,
    Event,
    Ignored,
    InstrumentsPage,
    Limits,
    Pong,
    RestRequest,
    Stream,
    SubscribeAck,
    SubscribeRejected,
    SubscribeRequest,
)
from feedd.intervals import close_time
from feedd.symbols import is_name

NAME = "bybit_futures"
DEFAULT_WS_URL = "wss://stream.bybit.com"
DEFAULT_REST_URL = "https://api.bybit.com"

# Bybit offers neither 8h nor 3d (section 2.5).
# fmt: off
INTERVALS: Mapping[str, str] = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
    "4h": "240", "6h": "360", "12h": "720", "1d": "D", "1w": "W", "1M": "M",
}
# fmt: on
_CANONICAL = {native: canonical for canonical, native in INTERVALS.items()}

LIMITS = Limits(
    # The args of one connection may total 21,000 characters; 200 topics of even a long
    # symbol ("kline.720.1000000BABYDOGEUSDT", ~33 chars quoted) use about a third of it.
    streams_per_connection=200,
    # No published inbound rate for public linear sockets; pings + subscribes stay far below.
    client_msgs_per_second=5,
    subscribe_requests_per_hour=None,
    # 500 new connections per 5 minutes per IP.
    connects_per_second=500 / 300,
    connection_lifetime_s=None,
    # The IP allows 600 requests / 5 s (7,200/min) across all of api.bybit.com, shared with
    # every other client on the host, and overstepping it costs a 10-minute HTTP 403 ban;
    # a sixth of it is ample for backfill.
    rest_weight_per_minute=1200,
)
PING_INTERVAL_S: float | None = 20.0
# Klines push every 1-60 s and pongs every 20 s, so 75 s of nothing means a dead socket.
SILENCE_TIMEOUT_S = 75.0
#: no public bulk archive of klines: history comes over REST only
ARCHIVE: ArchiveLayout | None = None

#: one bad topic can fail a whole subscribe request (section 2.2): keep requests small
SUBSCRIBE_CHUNK = 10
ARGS_MAX_CHARS = 21_000
REST_PAGE_LIMIT = 1000
INSTRUMENTS_PAGE_LIMIT = 1000
#: the 403 "access too frequent" ban lasts at least 10 minutes (section 2.6)
IP_BAN_RETRY_S = 600.0
_RATE_LIMIT_CODES = frozenset({10006})
#: longest symbol in a topic we read; topics carry it uppercase (Bybit refuses a lowercase
#: one), in any script (``feedd.symbols.is_name``)
_SYMBOL_MAX_CHARS = 40


# ----------------------------------------------------------------------------- symbols


def to_native(symbol: str) -> str:
    return symbol


def from_native(native: str) -> str:
    return native


def topic(stream: Stream) -> str:
    return f"kline.{INTERVALS[stream.interval]}.{to_native(stream.symbol)}"


def parse_topic(name: str) -> Stream:
    """``kline.1.BTCUSDT`` -> Stream("BTCUSDT", "1m"); ParseError for anything else."""
    kind, _, rest = name.partition(".")
    native_interval, _, symbol = rest.partition(".")
    if (
        kind != "kline"
        or native_interval not in _CANONICAL
        or not is_name(symbol, _SYMBOL_MAX_CHARS)
    ):
        raise ParseError(f"not a kline topic: {name[:80]!r}")
    return Stream(from_native(symbol), _CANONICAL[native_interval])


# ----------------------------------------------------------------------------- outgoing WS


def ws_url(base: str) -> str:
    return base.rstrip("/") + "/v5/public/linear"


def subscribe_requests(streams: Sequence[Stream], first_id: int) -> list[SubscribeRequest]:
    requests = []
    # +3 per topic: its quotes and the comma in the JSON args array.
    chunks = batched(streams, SUBSCRIBE_CHUNK, ARGS_MAX_CHARS, lambda s: len(topic(s)) + 3)
    for offset, chunk in enumerate(chunks):
        request_id = f"sub{first_id + offset}"
        args = [topic(s) for s in chunk]
        frame = f.dumps({"req_id": request_id, "op": "subscribe", "args": args})
        requests.append(SubscribeRequest(request_id, frame, chunk))
    return requests


def ping_frame(seq: int) -> str | None:
    return f.dumps({"req_id": f"ping-{seq}", "op": "ping"})


# ----------------------------------------------------------------------------- incoming WS


@parse_guard
def parse_frame(text: str) -> list[Event]:
    message = f.load_object(text)
    if "topic" in message:
        name = f.text(message["topic"], "topic")
        if not name.startswith("kline."):
            return [Ignored(f"topic {name[:60]}")]  # e.g. publicTrade.BTCUSDT, system.status
        stream = parse_topic(name)
        return [_kline(stream, item) for item in f.array(f.field(message, "data"), "data")]
    if "op" not in message and "success" not in message:
        raise ParseError(f"unrecognised frame: {text[:120]!r}")
    op = message.get("op")
    if op == "pong":
        return [Pong()]  # the option/private shape: {"op":"pong","args":["<ts>"],…}
    success = f.boolean(f.field(message, "success"), "success")
    ret_msg = f.text(message.get("ret_msg", ""), "ret_msg")
    req_id = message.get("req_id")
    request_id = None if req_id is None else f.text(req_id, "req_id")
    if op == "ping" and success and ret_msg == "pong":
        return [Pong()]  # linear pongs keep op "ping"; ret_msg is the marker
    if op == "subscribe":
        if success:
            return [SubscribeAck(request_id)]
        return [_subscribe_failed(request_id, ret_msg)]
    if not success:
        return [ErrorEvent(_error_kind(ret_msg), ret_msg)]
    return [Ignored(f"reply to op {str(op)[:20]}")]  # unsubscribe acks and other successful replies


def _subscribe_failed(request_id: str | None, ret_msg: str) -> Event:
    kind = _error_kind(ret_msg)
    if kind == "already subscribed":
        # The named topic keeps flowing (section 2.2), so the request did what we wanted.
        # Acking the whole request is safe: any stream of it that stays silent is caught
        # by the engine's per-stream silence watchdog.
        return SubscribeAck(request_id)
    streams = []
    _, found, named = ret_msg.partition("topic:")
    if found:
        for name in named.split(","):
            try:
                streams.append(parse_topic(name.strip()))
            except ParseError:
                continue  # not a kline topic of ours: the request as a whole failed
    return SubscribeRejected(request_id, tuple(streams), kind, ret_msg)


def _error_kind(ret_msg: str) -> str:
    """``error:handler not found,topic:…`` -> ``handler not found`` (Bybit frames have no code)."""
    head = ret_msg.removeprefix("error:").partition(",")[0].strip()
    return head or "error"


def _kline(stream: Stream, item: object) -> Candle:
    k = f.obj(item, "data[]")
    if f.text(f.field(k, "interval"), "interval") != INTERVALS[stream.interval]:
        raise ParseError(f"kline interval {k['interval']!r} contradicts its topic")
    values = [f.field(k, key) for key in ("open", "high", "low", "close", "volume", "turnover")]
    open_time = f.integer(f.field(k, "start"), "start")
    closed = f.boolean(f.field(k, "confirm"), "confirm")
    return ohlcv_candle(NAME, stream, open_time, values, closed, Source.WS)


# ----------------------------------------------------------------------------- REST


def kline_requests(stream: Stream, start_ms: int, end_ms: int, now_ms: int) -> list[RestRequest]:
    """Windows of at most one page each, covering open times ``start_ms`` .. ``end_ms``."""
    return [
        RestRequest(
            "/v5/market/kline",
            (
                ("category", "linear"),
                ("symbol", to_native(stream.symbol)),
                ("interval", INTERVALS[stream.interval]),
                ("start", str(window_start)),
                ("end", str(window_end)),
                ("limit", str(count)),
            ),
        )
        for window_start, window_end, count in page_windows(
            stream.interval, start_ms, end_ms, REST_PAGE_LIMIT
        )
    ]


@parse_guard
def parse_klines(stream: Stream, status: int, body: bytes, server_time_ms: int) -> list[Candle]:
    result = _result(status, body)
    candles = []
    for row in f.array(f.field(result, "list"), "list"):
        row = f.array(row, "kline row")
        if len(row) < 7:
            raise ParseError(f"kline row has {len(row)} fields, expected 7")
        open_time = f.int_string(row[0], "startTime")
        # No flag over REST and the newest row may be forming: closed once its period has
        # ended by the server clock.
        closed = close_time(stream.interval, open_time) <= server_time_ms
        candles.append(ohlcv_candle(NAME, stream, open_time, row[1:7], closed, Source.REST))
    candles.sort(key=lambda c: c.open_time)  # Bybit sends newest first
    return candles


def time_request() -> RestRequest:
    return RestRequest("/v5/market/time")


@parse_guard
def parse_time(status: int, body: bytes) -> int:
    envelope = _envelope(status, body)
    if "time" in envelope:
        return f.integer(envelope["time"], "time")
    result = f.obj(f.field(envelope, "result"), "result")
    return f.int_string(f.field(result, "timeNano"), "timeNano") // 1_000_000


def instruments_request(cursor: str | None) -> RestRequest:
    params = [("category", "linear"), ("limit", str(INSTRUMENTS_PAGE_LIMIT))]
    if cursor:
        params.append(("cursor", cursor))
    # nextPageCursor arrives percent-encoded (``first%3DBIOUSDT%26last%3DBIOUSDT``) and goes
    # back as given, as Bybit's own client sends it (PROTOCOLS.md section 7).
    return RestRequest("/v5/market/instruments-info", tuple(params), encoded=frozenset({"cursor"}))


@parse_guard
def parse_instruments(status: int, body: bytes) -> InstrumentsPage:
    result = _result(status, body)
    symbols = []
    for item in f.array(f.field(result, "list"), "list"):
        item = f.obj(item, "instrument")
        if (
            item.get("contractType") == "LinearPerpetual"
            and item.get("settleCoin") == "USDT"
            and item.get("status") == "Trading"
        ):
            symbols.append(from_native(f.text(f.field(item, "symbol"), "symbol")))
    cursor = result.get("nextPageCursor")
    # "" and null both end the paging (section 2.7).
    next_cursor = f.text(cursor, "nextPageCursor") if cursor is not None else ""
    return InstrumentsPage(tuple(symbols), next_cursor or None)


def used_weight(headers: Mapping[str, str]) -> int | None:
    # X-Bapi-Limit-Status is a per-endpoint remaining count, not a per-IP weight: ignored.
    return None


def _envelope(status: int, body: bytes) -> dict[str, Any]:
    """The decoded body; Bybit reports errors with HTTP 200 and ``retCode != 0``."""
    if status == 403:
        # "access too frequent": the IP limit was overstepped; the ban lasts >= 10 minutes.
        raise RateLimited("403", _snippet(body), IP_BAN_RETRY_S)
    if status in (418, 429):
        raise RateLimited(str(status), _snippet(body))
    if status != 200:
        raise ExchangeError(str(status), _snippet(body))
    envelope = f.load_object(body)
    code = f.integer(f.field(envelope, "retCode"), "retCode")
    if code != 0:
        message = str(envelope.get("retMsg", ""))
        if code in _RATE_LIMIT_CODES:
            raise RateLimited(str(code), message)
        raise ExchangeError(str(code), message)
    return envelope


def _result(status: int, body: bytes) -> dict[str, Any]:
    return f.obj(f.field(_envelope(status, body), "result"), "result")


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")
