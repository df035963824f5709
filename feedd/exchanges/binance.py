"""Binance USD-M futures, sans-IO: routed ``/market`` WebSocket, SUBSCRIBE frames, REST klines.

Protocol facts: ../shared/PROTOCOLS.md section 1. Klines are served only on the routed
``/market`` path; the legacy root acks subscriptions and then sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from feedd.candle import Candle, Source
from feedd.errors import ExchangeError, ParseError, RateLimited
from feedd.exchanges import fields as f
from feedd.exchanges.binance_archive import (
    ARCHIVE_INTERVALS,
    DEFAULT_ARCHIVE_URL,
    archive_files,
    checksum_of,
    parse_archive_csv,
)
from feedd.exchanges.common import page_windows
from feedd.exchanges.contract import (
    ArchiveLayout,
    Event,
    Ignored,
    InstrumentsPage,
    Limits,
    RestRequest,
    Stream,
    SubscribeAck,
    SubscribeRejected,
    SubscribeRequest,
)
from feedd.intervals import close_time

NAME = "binance_futures"
DEFAULT_WS_URL = "wss://fstream.binance.com"
DEFAULT_REST_URL = "https://fapi.binance.com"

# fmt: off
INTERVALS: Mapping[str, str] = {
    name: name
    for name in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
                 "1w", "1M")
}
# fmt: on
_CANONICAL = {native: canonical for canonical, native in INTERVALS.items()}

LIMITS = Limits(
    streams_per_connection=200,
    # Inbound (to Binance) budget is 10 msg/s including pong frames; the engine keeps a margin.
    client_msgs_per_second=10,
    subscribe_requests_per_hour=None,
    # USD-M publishes no connect limit; spot's 300 per 5 minutes is the conservative guess.
    connects_per_second=1.0,
    connection_lifetime_s=24 * 3600,
    rest_weight_per_minute=2400,
)
# The server pings with protocol frames; the WebSocket library answers them.
PING_INTERVAL_S: float | None = None
# Klines push every 250 ms while a symbol trades; a minute of nothing means a dead socket.
SILENCE_TIMEOUT_S = 60.0
#: data.binance.vision's daily and monthly kline zips (see ``binance_archive``)
ARCHIVE: ArchiveLayout | None = ArchiveLayout(
    DEFAULT_ARCHIVE_URL, ARCHIVE_INTERVALS, archive_files, parse_archive_csv, checksum_of
)

#: streams per SUBSCRIBE frame: small enough for the ~4 KB frame limit some clients report.
SUBSCRIBE_CHUNK = 50
REST_PAGE_LIMIT = 1500


# ----------------------------------------------------------------------------- symbols


def to_native(symbol: str) -> str:
    return symbol


def from_native(native: str) -> str:
    return native


def stream_name(stream: Stream) -> str:
    """``btcusdt@kline_1m``: the symbol lowercased, which leaves a Han name (``币安人生usdt``) as
    it is; the kline payload names the symbol in its listed (upper) case."""
    return f"{stream.symbol.lower()}@kline_{INTERVALS[stream.interval]}"


# ----------------------------------------------------------------------------- outgoing WS


def ws_url(base: str) -> str:
    """Combined-stream mode on the routed path: every payload names its stream."""
    return base.rstrip("/") + "/market/stream"


def subscribe_requests(streams: Sequence[Stream], first_id: int) -> list[SubscribeRequest]:
    requests = []
    for offset, start in enumerate(range(0, len(streams), SUBSCRIBE_CHUNK)):
        chunk = tuple(streams[start : start + SUBSCRIBE_CHUNK])
        request_id = first_id + offset
        params = [stream_name(s) for s in chunk]
        frame = f.dumps({"method": "SUBSCRIBE", "params": params, "id": request_id})
        requests.append(SubscribeRequest(str(request_id), frame, chunk))
    return requests


def ping_frame(seq: int) -> str | None:
    return None


# ----------------------------------------------------------------------------- incoming WS


class _Kline(msgspec.Struct):
    """The ``k`` object of a kline event, as far as a candle needs it."""

    open_time: int = msgspec.field(name="t")
    symbol: str = msgspec.field(name="s")
    interval: str = msgspec.field(name="i")
    open: str = msgspec.field(name="o")
    high: str = msgspec.field(name="h")
    low: str = msgspec.field(name="l")
    close: str = msgspec.field(name="c")
    volume: str = msgspec.field(name="v")
    quote_volume: str = msgspec.field(name="q")
    trades: int | None = msgspec.field(name="n")
    closed: bool = msgspec.field(name="x")


class _KlineEvent(msgspec.Struct):
    e: Literal["kline"]
    k: _Kline


class _CombinedKline(msgspec.Struct):
    """A combined-stream kline frame: ``stream`` must be there, whatever it holds."""

    stream: Any
    data: _KlineEvent


_COMBINED_KLINE = msgspec.json.Decoder(_CombinedKline)
_INT64 = range(0, 2**63)


def parse_frame(text: str) -> list[Event]:
    # Nearly every frame is a combined-stream kline: decode it typed, in one pass. Anything
    # else, garbage included, takes the general path, which decides alone what a frame is.
    try:
        k = _COMBINED_KLINE.decode(text).data.k
    except ValueError:  # msgspec's errors, and UnicodeEncodeError for lone surrogates
        return _parse_general(text)
    if (
        k.interval in _CANONICAL
        and k.open_time in _INT64
        and (k.trades is None or k.trades in _INT64)  # None first: range would scan for it
    ):
        o, h, low, c, v, q = k.open, k.high, k.low, k.close, k.volume, k.quote_volume
        if not f.six_decimals(o, h, low, c, v, q):
            o, h, low = f.decimal(o, "k.o"), f.decimal(h, "k.h"), f.decimal(low, "k.l")
            c, v, q = f.decimal(c, "k.c"), f.decimal(v, "k.v"), f.decimal(q, "k.q")
        interval = _CANONICAL[k.interval]
        return [Candle(NAME, k.symbol, interval, k.open_time, o, h, low, c, v, q, k.trades,
                       k.closed, Source.WS)]  # fmt: skip
    return _parse_general(text)  # says what is wrong with it


def _parse_general(text: str) -> list[Event]:
    message = f.load_object(text)
    data = message.get("data")
    if isinstance(data, dict) and "stream" in message:
        message = data
    event = message.get("e")
    if event == "kline":
        return [_kline(message)]
    if event is not None:
        return [Ignored(f"event {f.text(event, 'e')[:40]}")]  # e.g. aggTrade, markPriceUpdate
    if "error" in message:
        error = f.obj(message["error"], "error")
        return [_rejected(message.get("id"), error.get("code"), error.get("msg"))]
    if "code" in message and "msg" in message:
        # Seen in some clients for unknown symbols: a flat error with the request id.
        return [_rejected(message.get("id"), message["code"], message["msg"])]
    if "result" in message and "id" in message:
        if message["result"] is None:
            return [SubscribeAck(_request_id(message["id"]))]
        return [Ignored("reply to another request")]  # LIST_SUBSCRIPTIONS, GET_PROPERTY
    raise ParseError(f"unrecognised frame: {text[:120]!r}")


def _request_id(value: object) -> str | None:
    return None if value is None else str(value)


def _rejected(request_id: object, code: object, msg: object) -> SubscribeRejected:
    return SubscribeRejected(_request_id(request_id), (), str(code), str(msg))


def _kline(message: dict[str, Any]) -> Candle:
    k = f.obj(f.field(message, "k"), "k")
    try:
        native_interval = k["i"]
        interval = _CANONICAL[native_interval]
        trades = k["n"]
        return Candle(
            exchange=NAME,
            symbol=f.text(k["s"], "k.s"),
            interval=interval,
            open_time=f.integer(k["t"], "k.t"),
            open=f.decimal(k["o"], "k.o"),
            high=f.decimal(k["h"], "k.h"),
            low=f.decimal(k["l"], "k.l"),
            close=f.decimal(k["c"], "k.c"),
            volume=f.decimal(k["v"], "k.v"),
            quote_volume=f.decimal(k["q"], "k.q"),
            trades=None if trades is None else f.integer(trades, "k.n"),
            closed=f.boolean(k["x"], "k.x"),
            source=Source.WS,
        )
    except KeyError as exc:
        raise ParseError(f"kline frame lacks {exc}") from None
    except TypeError:
        raise ParseError("kline frame has a field of the wrong type") from None


# ----------------------------------------------------------------------------- REST


def kline_requests(stream: Stream, start_ms: int, end_ms: int, now_ms: int) -> list[RestRequest]:
    """Windows of at most one page each, covering open times ``start_ms`` .. ``end_ms``."""
    requests = []
    for window_start, window_end, limit in page_windows(
        stream.interval, start_ms, end_ms, REST_PAGE_LIMIT
    ):
        params = (
            ("symbol", stream.symbol),
            ("interval", INTERVALS[stream.interval]),
            ("startTime", str(window_start)),
            ("endTime", str(window_end)),
            ("limit", str(limit)),
        )
        requests.append(RestRequest("/fapi/v1/klines", params, weight=kline_weight(limit)))
    return requests


def kline_weight(limit: int) -> int:
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def parse_klines(stream: Stream, status: int, body: bytes, server_time_ms: int) -> list[Candle]:
    rows = f.array(_ok_json(status, body), "klines")
    candles = []
    for row in rows:
        row = f.array(row, "kline row")
        if len(row) < 9:
            raise ParseError(f"kline row has {len(row)} fields, expected 12")
        open_time = f.integer(row[0], "row[0]")
        candles.append(
            Candle(
                exchange=NAME,
                symbol=stream.symbol,
                interval=stream.interval,
                open_time=open_time,
                open=f.decimal(row[1], "row[1]"),
                high=f.decimal(row[2], "row[2]"),
                low=f.decimal(row[3], "row[3]"),
                close=f.decimal(row[4], "row[4]"),
                volume=f.decimal(row[5], "row[5]"),
                quote_volume=f.decimal(row[7], "row[7]"),
                trades=f.integer(row[8], "row[8]"),
                # No closed flag over REST: a row is closed once the server clock passed it.
                closed=close_time(stream.interval, open_time) <= server_time_ms,
                source=Source.REST,
            )
        )
    candles.sort(key=lambda c: c.open_time)
    return candles


def time_request() -> RestRequest:
    return RestRequest("/fapi/v1/time")


def parse_time(status: int, body: bytes) -> int:
    return f.integer(f.field(f.obj(_ok_json(status, body), "time"), "serverTime"), "serverTime")


def instruments_request(cursor: str | None) -> RestRequest:
    return RestRequest("/fapi/v1/exchangeInfo")


class _Instrument(msgspec.Struct):
    symbol: object = None
    contract_type: object = msgspec.field(default=None, name="contractType")
    quote_asset: object = msgspec.field(default=None, name="quoteAsset")
    status: object = None


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Instrument]


# Memory: exchangeInfo is ~1.5 MB of JSON; decoding all of it peaked at 24 MB and left ~16 MB
# of RSS behind at each fetch. Only these four fields are built.
_decode_info = msgspec.json.Decoder(_ExchangeInfo).decode


def parse_instruments(status: int, body: bytes) -> InstrumentsPage:
    if status == 200:
        try:
            listed = _decode_info(body).symbols
        except msgspec.DecodeError:
            pass  # malformed: the generic reader below names what is wrong
        else:
            return InstrumentsPage(
                tuple(
                    f.text(i.symbol, "symbol")
                    for i in listed
                    if i.contract_type == "PERPETUAL"
                    and i.quote_asset == "USDT"
                    and i.status == "TRADING"
                ),
                None,
            )
    info = f.obj(_ok_json(status, body), "exchangeInfo")
    symbols = []
    for item in f.array(f.field(info, "symbols"), "symbols"):
        item = f.obj(item, "symbol")
        if (
            item.get("contractType") == "PERPETUAL"
            and item.get("quoteAsset") == "USDT"
            and item.get("status") == "TRADING"
        ):
            symbols.append(f.text(item.get("symbol"), "symbol"))
    return InstrumentsPage(tuple(symbols), None)


def used_weight(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-mbx-used-weight-1m") or headers.get("X-MBX-USED-WEIGHT-1M")
    # isdigit() alone accepts "²", which int() refuses: only ASCII digits are a count.
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _ok_json(status: int, body: bytes) -> Any:
    """The decoded body of a successful response; Binance errors are HTTP 4xx + code/msg."""
    if status == 200:
        return f.load_json(body)
    try:
        error = f.load_object(body)
        code, msg = str(error.get("code", status)), str(error.get("msg", ""))
    except ParseError:
        code, msg = str(status), body[:200].decode("utf-8", "replace")
    if status in (418, 429):
        raise RateLimited(code, msg)
    raise ExchangeError(code, msg)
