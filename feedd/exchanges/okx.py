"""OKX v5 SWAP (USDT-margined perpetuals), sans-IO: ``/ws/v5/business`` candles, text ping, REST.

Protocol facts: ../shared/PROTOCOLS.md section 3 (and the traps of section 4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from feedd.candle import Candle, Source
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import fields as f
from feedd.exchanges.common import batched, ohlcv_candle, page_window, parse_guard
from feedd.exchanges.contract import (
    ArchiveLayout,
    ErrorEvent,
    Event,
    Ignored,
    InstrumentsPage,
    Limits,
    Notice,
    Pong,
    RestRequest,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
    SubscribeRequest,
)
from feedd.intervals import INTERVAL_MS, floor_open
from feedd.symbols import is_name

NAME = "okx_futures"
DEFAULT_WS_URL = "wss://ws.okx.com:8443"
DEFAULT_REST_URL = "https://www.okx.com"

# Bars of 6h and longer use the ``utc`` names: the plain ones open at 16:00 UTC (UTC+8).
# OKX offers no 8h bar (section 3.5).
# fmt: off
INTERVALS: Mapping[str, str] = {
    "1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "2h": "2H",
    "4h": "4H", "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc", "3d": "3Dutc", "1w": "1Wutc",
    "1M": "1Mutc",
}
# fmt: on
_CANONICAL = {native: canonical for canonical, native in INTERVALS.items()}

LIMITS = Limits(
    # No published channel cap (close codes 4008/4009 exist): stay modest per connection.
    streams_per_connection=200,
    client_msgs_per_second=5,
    subscribe_requests_per_hour=480,
    connects_per_second=3,
    connection_lifetime_s=None,
    # Per IP: candles 40 req / 2 s, history-candles 20 req / 2 s. With candles weighing 1 and
    # history 2, 600 per minute (20 per 2 s) keeps either endpoint at or below its own limit
    # even if the whole budget went to it, and the engine's burst (5 %) stays under both.
    rest_weight_per_minute=600,
)
# The server closes after 30 s without traffic; pong counts as traffic.
PING_INTERVAL_S: float | None = 20.0
SILENCE_TIMEOUT_S = 45.0
#: no public bulk archive of klines: history comes over REST only
ARCHIVE: ArchiveLayout | None = None

#: every request costs one of 480 per hour, so batch generously (args may total 64 KB)
SUBSCRIBE_CHUNK = 100
ARGS_MAX_BYTES = 60_000
CANDLES_PAGE_LIMIT = 300
HISTORY_PAGE_LIMIT = 100  # sources disagree (100 vs 300): ask for the safe one (section 5)
#: ``candles`` serves the latest 1,440 bars; keep a margin for clock skew and page edges
RECENT_BARS = 1_400
_RATE_LIMIT_CODES = frozenset({"50011"})
_NATIVE_SUFFIX = "-USDT-SWAP"
_BASE_MAX_CHARS = 30
# 60018 names the channel and instrument: "…channel:candle1m,instId:BTC-USDT-SWAP doesn't…"
# (\w: a base may be letters of any script)
_NAMED_ARG = re.compile(r"channel:(candle[0-9A-Za-z]+),\s*instId:([\w-]+)")


# ----------------------------------------------------------------------------- symbols


def to_native(symbol: str) -> str:
    """``BTCUSDT`` -> ``BTC-USDT-SWAP``; ParseError for a symbol that is not a USDT pair."""
    base = symbol.removesuffix("USDT")
    if base == symbol or not is_name(base, _BASE_MAX_CHARS):
        raise ParseError(f"not a USDT symbol: {symbol[:40]!r}")
    return base + _NATIVE_SUFFIX


def from_native(native: str) -> str:
    """``BTC-USDT-SWAP`` -> ``BTCUSDT``; ParseError for anything but a USDT swap."""
    base = native.removesuffix(_NATIVE_SUFFIX)
    if base == native or not is_name(base, _BASE_MAX_CHARS):
        raise ParseError(f"not a USDT swap: {native[:40]!r}")
    return base + "USDT"


def channel_arg(stream: Stream) -> dict[str, str]:
    return {"channel": "candle" + INTERVALS[stream.interval], "instId": to_native(stream.symbol)}


def parse_arg(channel: object, inst_id: object) -> Stream:
    bar = f.text(channel, "channel").removeprefix("candle")
    if bar not in _CANONICAL:
        raise ParseError(f"not a candle channel we use: {channel!r}")
    return Stream(from_native(f.text(inst_id, "instId")), _CANONICAL[bar])


# ----------------------------------------------------------------------------- outgoing WS


def ws_url(base: str) -> str:
    # Candles live on /business only; /public answers 60018 or 64001 (section 3.1).
    return base.rstrip("/") + "/ws/v5/business"


def subscribe_requests(streams: Sequence[Stream], first_id: int) -> list[SubscribeRequest]:
    requests = []
    for offset, chunk in enumerate(batched(streams, SUBSCRIBE_CHUNK, ARGS_MAX_BYTES, _arg_size)):
        request_id = f"sub{first_id + offset}"  # alphanumeric, <= 32 chars
        args = [channel_arg(s) for s in chunk]
        frame = f.dumps({"id": request_id, "op": "subscribe", "args": args})
        requests.append(SubscribeRequest(request_id, frame, chunk))
    return requests


def _arg_size(stream: Stream) -> int:
    return len(f.dumps(channel_arg(stream))) + 1  # +1 for the comma between args


def ping_frame(seq: int) -> str | None:
    return "ping"  # the bare text, not JSON: a quoted "ping" earns 60012


# ----------------------------------------------------------------------------- incoming WS


@parse_guard
def parse_frame(text: str) -> list[Event]:
    # Heartbeats are bare text and must be matched before JSON parsing.
    if text == "pong":
        return [Pong()]
    if text == "ping":
        return [ServerPing("pong")]
    message = f.load_object(text)
    if "event" in message:
        return _event(message)
    arg = f.obj(f.field(message, "arg"), "arg")
    channel = f.text(f.field(arg, "channel"), "channel")
    if not channel.startswith("candle"):
        return [Ignored(f"channel {channel[:40]}")]  # e.g. tickers, trades
    stream = parse_arg(channel, f.field(arg, "instId"))
    rows = f.array(f.field(message, "data"), "data")
    return [_candle(stream, f.array(row, "data[]"), Source.WS) for row in rows]


def _event(message: dict[str, Any]) -> list[Event]:
    event = f.text(message["event"], "event")
    request_id = message.get("id")
    request_id = None if request_id is None else f.text(request_id, "id")
    if event == "subscribe":
        arg = f.obj(f.field(message, "arg"), "arg")
        channel = f.text(f.field(arg, "channel"), "channel")
        if not channel.startswith("candle"):
            return [Ignored(f"ack for channel {channel[:40]}")]  # never ours to ask for
        # One ack per arg; it echoes ``id`` only when the request had one and the server
        # supports it (captures from 2022 have none), so the arg identifies the stream.
        return [SubscribeAck(request_id, parse_arg(channel, f.field(arg, "instId")))]
    if event in ("error", "notice"):
        code = f.text(f.field(message, "code"), "code")
        msg = f.text(message.get("msg", ""), "msg")
        if event == "notice":
            # 64008: the connection closes for an upgrade in about 60 s; rotate now.
            return [Notice(code, msg, reconnect=code == "64008")]
        streams = tuple(_named_streams(msg))
        # Our only requests carry ids, so an id (or a named candle arg) ties an error to a
        # subscription; anything else (e.g. 60012 for a malformed ping) is a plain error.
        if request_id is not None or streams:
            return [SubscribeRejected(request_id, streams, code, msg)]
        return [ErrorEvent(code, msg)]
    # unsubscribe acks, channel-conn-count and other informational events
    return [Ignored(f"event {event[:40]}")]


def _named_streams(msg: str) -> list[Stream]:
    streams = []
    for channel, inst_id in _NAMED_ARG.findall(msg):
        try:
            streams.append(parse_arg(channel, inst_id))
        except ParseError:
            continue  # a channel or instrument we never ask for
    return streams


def _candle(stream: Stream, row: list[Any], source: Source) -> Candle:
    """``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]``.

    Index 5 counts contracts and is never stored. Older 7-element rows lack the quote volume
    and cannot be stored faithfully: ParseError. A row without ``confirm`` is taken as forming,
    so it never overwrites a closed candle.
    """
    if len(row) < 8:
        raise ParseError(f"candle row has {len(row)} fields, expected 9 (volCcyQuote missing)")
    open_time = f.int_string(row[0], "ts")
    confirm = f.text(row[8], "confirm") if len(row) > 8 else "0"
    if confirm not in ("0", "1"):
        raise ParseError(f"confirm: expected '0' or '1', got {confirm[:20]!r}")
    values = [*row[1:5], row[6], row[7]]
    return ohlcv_candle(NAME, stream, open_time, values, confirm == "1", source)


# ----------------------------------------------------------------------------- REST


def kline_requests(stream: Stream, start_ms: int, end_ms: int, now_ms: int) -> list[RestRequest]:
    """Windows of at most one page each, covering open times ``start_ms`` .. ``end_ms``.

    ``after``/``before`` are exclusive bounds. Windows within the latest bars use ``candles``
    (300 a page); older ones need ``history-candles`` (100 a page, twice the weight).
    """
    recent_from = floor_open(stream.interval, now_ms) - RECENT_BARS * INTERVAL_MS[stream.interval]
    requests = []
    window_start = start_ms
    while window_start <= end_ms:
        recent = window_start >= recent_from
        limit = CANDLES_PAGE_LIMIT if recent else HISTORY_PAGE_LIMIT
        window_end, count = page_window(stream.interval, window_start, end_ms, limit)
        params = (
            ("instId", to_native(stream.symbol)),
            ("bar", INTERVALS[stream.interval]),
            ("after", str(window_end + 1)),
            ("before", str(max(window_start - 1, 0))),
            ("limit", str(count)),
        )
        path = "/api/v5/market/candles" if recent else "/api/v5/market/history-candles"
        requests.append(RestRequest(path, params, weight=1 if recent else 2))
        window_start = window_end + 1
    return requests


@parse_guard
def parse_klines(stream: Stream, status: int, body: bytes, server_time_ms: int) -> list[Candle]:
    rows = f.array(f.field(_envelope(status, body), "data"), "data")
    # Closed is OKX's own confirm flag, over REST too; the first row may be forming.
    candles = [_candle(stream, f.array(row, "data[]"), Source.REST) for row in rows]
    candles.sort(key=lambda c: c.open_time)  # OKX sends newest first
    return candles


def time_request() -> RestRequest:
    return RestRequest("/api/v5/public/time")


@parse_guard
def parse_time(status: int, body: bytes) -> int:
    data = f.array(f.field(_envelope(status, body), "data"), "data")
    if not data:
        raise ParseError("time response has no data")
    return f.int_string(f.field(f.obj(data[0], "data[0]"), "ts"), "ts")


def instruments_request(cursor: str | None) -> RestRequest:
    # One page holds every SWAP; the endpoint allows 20 requests / 2 s like history-candles.
    return RestRequest("/api/v5/public/instruments", (("instType", "SWAP"),), weight=2)


@parse_guard
def parse_instruments(status: int, body: bytes) -> InstrumentsPage:
    symbols = []
    for item in f.array(f.field(_envelope(status, body), "data"), "data"):
        item = f.obj(item, "instrument")
        if (
            item.get("ctType") != "linear"
            or item.get("settleCcy") != "USDT"
            or item.get("state") != "live"
        ):
            continue
        # instId is what we subscribe with, so it decides the symbol; instFamily stands in
        # when instId is blank. Rows naming neither sensibly are skipped, not fatal.
        family = item.get("instFamily")
        native = item.get("instId") or (f"{family}-SWAP" if isinstance(family, str) else "")
        try:
            symbols.append(from_native(f.text(native, "instId")))
        except ParseError:
            continue
    return InstrumentsPage(tuple(symbols), None)


def used_weight(headers: Mapping[str, str]) -> int | None:
    return None  # OKX sends no usage header


def _envelope(status: int, body: bytes) -> dict[str, Any]:
    """The decoded body; OKX reports errors with HTTP 200 and ``code != "0"``."""
    try:
        envelope = f.load_object(body)
        code = f.text(f.field(envelope, "code"), "code")
    except ParseError:
        if status == 200:
            raise
        envelope, code = {"msg": body[:200].decode("utf-8", "replace")}, str(status)
    message = str(envelope.get("msg", ""))
    if status == 429 or code in _RATE_LIMIT_CODES:
        raise RateLimited(code, message)
    if status != 200 or code != "0":
        raise ExchangeError(str(status) if code == "0" else code, message)
    return envelope
