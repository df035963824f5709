"""One contract suite run over every exchange module in the registry (DESIGN.md, module contract).

Each venue supplies fixtures shaped like ../shared/PROTOCOLS.md and a ``Case`` of expectations;
a module registered without a case fails here on purpose.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedd.candle import Candle, Source
from feedd.errors import ExchangeError, FeeddError, ParseError, RateLimited
from feedd.exchanges import REGISTRY
from feedd.exchanges.common import batched, parse_guard
from feedd.exchanges.contract import (
    ErrorEvent,
    ExchangeModule,
    Ignored,
    InstrumentsPage,
    Notice,
    Pong,
    RestRequest,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
)
from feedd.intervals import CANONICAL_INTERVALS, INTERVAL_MS, floor_open, next_open

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1772461800000  # 2026-03-02 14:30 UTC, the time of PROTOCOLS.md's samples
SERVER_TIME = 1772462130000  # 14:35:30: the 14:35 candle is still forming
BTC_1M = Stream("BTCUSDT", "1m")
DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def fixture(venue: str, name: str) -> str:
    return (FIXTURES / venue / name).read_text().removesuffix("\n")


@attrs.frozen
class Case:
    directory: str
    ws_url: str
    #: expected values of ws_candle_closed (symbol BTCUSDT, interval 1m)
    closed: dict[str, object]
    forming_open_time: int
    ack: list[object]
    rejected: SubscribeRejected
    pong_fixture: str | None
    #: (first open time, last open time, limit, page limit) of one kline request
    window: Callable[[RestRequest], tuple[int, int, int, int]]
    #: the args of a subscribe frame, and its echoed id
    frame_args: Callable[[dict[str, Any]], list[Any]]
    frame_id: Callable[[dict[str, Any]], object]
    max_args_per_request: int
    max_args_chars: int
    error_status: int
    error_code: str
    rate_limited_status: int
    time_ms: int
    #: (fixture, symbols, next cursor) per instruments page, in paging order
    instruments: list[tuple[str, tuple[str, ...], str | None]]
    #: well-formed frames of channels feedd never asks for, or replies it has no use for
    ignored: tuple[str, ...]


def _params(request: RestRequest) -> dict[str, str]:
    return dict(request.params)


def _binance_window(request: RestRequest) -> tuple[int, int, int, int]:
    p = _params(request)
    return int(p["startTime"]), int(p["endTime"]), int(p["limit"]), 1500


def _bybit_window(request: RestRequest) -> tuple[int, int, int, int]:
    p = _params(request)
    return int(p["start"]), int(p["end"]), int(p["limit"]), 1000


def _okx_window(request: RestRequest) -> tuple[int, int, int, int]:
    p = _params(request)  # after/before are exclusive
    page = 300 if request.path == "/api/v5/market/candles" else 100
    return int(p["before"]) + 1, int(p["after"]) - 1, int(p["limit"]), page


CLOSED_COMMON = {"symbol": "BTCUSDT", "interval": "1m", "open_time": 1772462040000, "closed": True}
PRICES = ("open", "high", "low", "close", "volume", "quote_volume")


def expected(*values: str | int | None) -> dict[str, object]:
    """The closed 14:34 candle of the fixtures: OHLC, base and quote volume, trades."""
    return {**CLOSED_COMMON, **dict(zip((*PRICES, "trades"), values, strict=True))}


CASES: dict[str, Case] = {
    "binance_futures": Case(
        directory="binance",
        ws_url="wss://fstream.binance.com/market/stream",
        closed=expected(
            "94172.40", "94230.90", "94170.10", "94221.80", "131.776", "12413747.23840", 1972
        ),
        forming_open_time=1772462100000,
        ack=[SubscribeAck("1")],
        rejected=SubscribeRejected("1", (), "2", "Invalid request: invalid stream"),
        pong_fixture=None,
        window=_binance_window,
        frame_args=lambda frame: frame["params"],
        frame_id=lambda frame: str(frame["id"]),
        max_args_per_request=200,
        max_args_chars=4000,
        error_status=400,
        error_code="-1121",
        rate_limited_status=429,
        time_ms=1772462130000,
        instruments=[("rest_instruments.json", ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT"), None)],
        ignored=("ws_agg_trade.json", "ws_list_subscriptions.json"),
    ),
    "bybit_futures": Case(
        directory="bybit",
        ws_url="wss://stream.bybit.com/v5/public/linear",
        closed=expected("94170.7", "94229.2", "94168.4", "94220.1", "49.215", "4636136.6655", None),
        forming_open_time=1772462100000,
        ack=[SubscribeAck("sub1")],
        rejected=SubscribeRejected(
            "sub1",
            (Stream("FOOUSDT", "1m"),),
            "handler not found",
            "error:handler not found,topic:kline.1.FOOUSDT",
        ),
        pong_fixture="ws_pong.json",
        window=_bybit_window,
        frame_args=lambda frame: frame["args"],
        frame_id=lambda frame: frame["req_id"],
        max_args_per_request=10,
        max_args_chars=21_000,
        error_status=200,
        error_code="10001",
        rate_limited_status=200,
        time_ms=1688639403423,
        instruments=[
            (
                "rest_instruments_1.json",
                ("1000PEPEUSDT", "BTCUSDT"),
                "first%3D1000PEPEUSDT%26last%3DBTCUSDT-27MAR26",
            ),
            ("rest_instruments_2.json", ("ETHUSDT",), None),
        ],
        ignored=("ws_public_trade.json", "ws_unsubscribe_ack.json"),
    ),
    "okx_futures": Case(
        directory="okx",
        ws_url="wss://ws.okx.com:8443/ws/v5/business",
        closed=expected(
            "94173.7", "94232.2", "94171.4", "94223.1", "39.7542", "3745032.4847", None
        ),
        forming_open_time=1772462100000,
        ack=[SubscribeAck("sub1", BTC_1M)],
        rejected=SubscribeRejected(
            "sub1",
            (BTC_1M,),
            "60018",
            "Wrong URL or channel:candle1m,instId:BTC-USDT-SWAP doesn't exist. Please use the "
            "correct URL, channel and parameters referring to API document.",
        ),
        pong_fixture="ws_pong.txt",
        window=_okx_window,
        frame_args=lambda frame: frame["args"],
        frame_id=lambda frame: frame["id"],
        max_args_per_request=100,
        max_args_chars=64 * 1024,
        error_status=200,
        error_code="51001",
        rate_limited_status=200,
        time_ms=1597026383085,
        instruments=[("rest_instruments.json", ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT"), None)],
        ignored=("ws_tickers.json", "ws_ack_tickers.json", "ws_unsubscribe_ack.json"),
    ),
}

VENUES = sorted(REGISTRY)


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> tuple[ExchangeModule, Case]:
    return REGISTRY[request.param], CASES[request.param]


def assert_valid(module: ExchangeModule, events: object) -> None:
    """What the engine may rely on for anything parse_frame returns."""
    assert isinstance(events, list)
    kinds = (Candle, SubscribeAck, SubscribeRejected, Pong, ServerPing, Notice, ErrorEvent, Ignored)
    for event in events:
        assert isinstance(event, kinds)
        if isinstance(event, Candle):
            assert event.exchange == module.NAME
            assert event.interval in module.INTERVALS
            assert event.symbol and module.from_native(module.to_native(event.symbol))
            assert type(event.open_time) is int and 0 <= event.open_time < 2**63
            for value in (getattr(event, name) for name in PRICES):
                assert DECIMAL.fullmatch(value), value
            assert event.trades is None or type(event.trades) is int
            assert type(event.closed) is bool


# ----------------------------------------------------------------------------- constants


def test_registry_names_and_cases(venue: tuple[ExchangeModule, Case]) -> None:
    module, _case = venue
    assert REGISTRY[module.NAME] is module
    assert module.NAME in CASES


def test_urls(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    assert module.ws_url(module.DEFAULT_WS_URL) == case.ws_url
    # Defaults are scheme + host (+ port) only, so an override replaces exactly those.
    for base in (module.DEFAULT_WS_URL, module.DEFAULT_REST_URL):
        assert re.fullmatch(r"[a-z]+://[a-z0-9.-]+(:\d+)?", base), base
    path = case.ws_url.removeprefix(module.DEFAULT_WS_URL)
    assert module.ws_url("ws://127.0.0.1:8765") == "ws://127.0.0.1:8765" + path
    assert module.ws_url("ws://127.0.0.1:8765/") == "ws://127.0.0.1:8765" + path


@pytest.mark.parametrize("interval", CANONICAL_INTERVALS)
def test_archive_is_optional_and_plans_contiguous_files(
    venue: tuple[ExchangeModule, Case], interval: str
) -> None:
    """A venue's archive, if any: files oldest first, each whole intervals, back to back, all
    closed before now; the engine knows nothing else of the layout."""
    module, _ = venue
    layout = module.ARCHIVE
    if layout is None:
        return
    assert re.fullmatch(r"https://[a-z0-9.-]+", layout.default_url)
    assert layout.intervals <= set(module.INTERVALS)
    now = 1_772_461_800_000  # 2026-03-02 14:30 UTC
    start = now - 100 * 86_400_000 + 12_345
    files = layout.files("BTCUSDT", interval, start, now, now)
    if interval not in layout.intervals:
        assert files == []
        return
    assert files and files[0].first_open_ms <= start < files[0].last_open_ms
    for file in files:
        assert floor_open(interval, file.first_open_ms) == file.first_open_ms
        assert floor_open(interval, file.last_open_ms) == file.last_open_ms
        assert next_open(interval, file.last_open_ms) <= now
        assert file.checksum_path.startswith(file.path) and file.path.startswith("/")
    for a, b in itertools.pairwise(files):
        assert b.first_open_ms == next_open(interval, a.last_open_ms)


def test_limits_and_heartbeat(venue: tuple[ExchangeModule, Case]) -> None:
    module, _ = venue
    limits = module.LIMITS
    assert limits.streams_per_connection > 0
    assert 0 < limits.client_msgs_per_second <= 10
    assert limits.connects_per_second > 0 and limits.rest_weight_per_minute > 0
    if module.PING_INTERVAL_S is not None:
        assert module.SILENCE_TIMEOUT_S > module.PING_INTERVAL_S
        assert module.ping_frame(7) is not None
    else:
        assert module.ping_frame(7) is None


@pytest.mark.parametrize(
    "symbol", ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "1INCHUSDT", "币安人生USDT"]
)
def test_symbol_round_trip(venue: tuple[ExchangeModule, Case], symbol: str) -> None:
    module, _ = venue
    native = module.to_native(symbol)
    assert module.from_native(native) == symbol


def test_intervals_are_canonical(venue: tuple[ExchangeModule, Case]) -> None:
    module, _ = venue
    assert set(module.INTERVALS) <= set(CANONICAL_INTERVALS)
    assert len(set(module.INTERVALS.values())) == len(module.INTERVALS)


# ----------------------------------------------------------------------------- subscribe


@pytest.mark.parametrize("interval", CANONICAL_INTERVALS)
def test_every_interval_builds_frame_and_request(
    venue: tuple[ExchangeModule, Case], interval: str
) -> None:
    module, case = venue
    if interval not in module.INTERVALS:
        pytest.skip(f"{module.NAME} does not offer {interval}")
    native = module.INTERVALS[interval]
    stream = Stream("BTCUSDT", interval)
    [request] = module.subscribe_requests([stream], 1)
    assert request.streams == (stream,)
    args = case.frame_args(orjson.loads(request.frame))
    assert len(args) == 1 and native in orjson.dumps(args).decode()
    end = floor_open(interval, T0)
    requests = module.kline_requests(stream, end - 10 * INTERVAL_MS[interval], end, T0)
    assert requests and all(native in _params(r).values() for r in requests)


def test_subscribe_chunking_1000_symbols(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    streams = [Stream(f"SYM{i:04d}USDT", "1m") for i in range(1000)]
    requests = module.subscribe_requests(streams, 41)
    assert len(requests) > 1
    assert [s for r in requests for s in r.streams] == streams  # all, once, in order
    assert len({r.request_id for r in requests}) == len(requests)
    for request in requests:
        frame = orjson.loads(request.frame)
        args = case.frame_args(frame)
        assert len(args) == len(request.streams) <= case.max_args_per_request
        assert len(orjson.dumps(args)) <= case.max_args_chars
        assert case.frame_id(frame) == request.request_id


# ----------------------------------------------------------------------------- frames


def test_closed_and_forming_candles(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    [closed] = module.parse_frame(fixture(case.directory, "ws_candle_closed.json"))
    assert isinstance(closed, Candle)
    assert closed.exchange == module.NAME and closed.source is Source.WS
    assert {name: getattr(closed, name) for name in case.closed} == case.closed
    [forming] = module.parse_frame(fixture(case.directory, "ws_candle_forming.json"))
    assert isinstance(forming, Candle)
    assert forming.closed is False and forming.open_time == case.forming_open_time


def test_ack_matches_our_request_id(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    events = module.parse_frame(fixture(case.directory, "ws_ack.json"))
    assert events == case.ack
    [request] = module.subscribe_requests([BTC_1M], 1)
    assert isinstance(events[0], SubscribeAck) and events[0].request_id == request.request_id


def test_rejection(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    assert module.parse_frame(fixture(case.directory, "ws_rejected.json")) == [case.rejected]


def test_other_channels_are_ignored_not_parse_errors(venue: tuple[ExchangeModule, Case]) -> None:
    """So that ``parse_errors`` counts only frames that are wrong."""
    module, case = venue
    assert case.ignored
    for name in case.ignored:
        events = module.parse_frame(fixture(case.directory, name))
        assert len(events) == 1 and isinstance(events[0], Ignored), name
        assert events[0].reason, name


def test_pong(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    if case.pong_fixture is None:
        assert module.PING_INTERVAL_S is None  # the server pings with protocol frames
        return
    assert module.parse_frame(fixture(case.directory, case.pong_fixture)) == [Pong()]


MUST_FAIL = [
    "",
    " ",
    "not json",
    "{",
    '{"topic":',
    "[]",
    "[1, 2]",
    "null",
    "42",
    '"text"',
    "true",
    "{}",
    '{"a": 1}',
    "1e400",
    "[" * 5000,
    "\x00",
    "\ud800",
    '{"data": null}',
    '{"arg": 5}',
    '{"e": "kline"}',
    '{"e": "kline", "k": []}',
    '{"topic": "kline.1.BTCUSDT"}',
    '{"topic": "kline.1.BTCUSDT", "data": [5]}',
    '{"arg": {"channel": "candle1m"}}',
    '{"arg": {"channel": "candle1m", "instId": "BTC-USDT-SWAP"}, "data": [[1]]}',
    '{"success": "yes", "op": "subscribe"}',
    '{"event": 7}',
]


@pytest.mark.parametrize("text", MUST_FAIL)
def test_garbage_raises_parse_error(venue: tuple[ExchangeModule, Case], text: str) -> None:
    module, _ = venue
    with pytest.raises(ParseError):
        module.parse_frame(text)


def _mutations(value: Any) -> Iterator[Any]:
    """Copies of a JSON document with one leaf retyped or one key or element removed."""
    replacements = [None, 12345, "x", "-1", "1" * 40, "١٢٣", 1e300, 2**64 - 1, True, [], {}]
    if isinstance(value, dict):
        for key in value:
            dropped = dict(value)
            del dropped[key]
            yield dropped
            for inner in _mutations(value[key]):
                yield {**value, key: inner}
    elif isinstance(value, list):
        for i in range(len(value)):
            yield value[:i] + value[i + 1 :]
            for inner in _mutations(value[i]):
                yield [*value[:i], inner, *value[i + 1 :]]
    else:
        for replacement in replacements:
            if replacement != value or type(replacement) is not type(value):
                yield replacement


def _ws_fixtures(case: Case) -> list[str]:
    return sorted(p.name for p in (FIXTURES / case.directory).glob("ws_*.json"))


def test_mutated_frames_raise_only_parse_error(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    tried = 0
    for name in _ws_fixtures(case):
        for mutated in _mutations(orjson.loads(fixture(case.directory, name))):
            tried += 1
            try:
                events = module.parse_frame(json.dumps(mutated))
            except ParseError:
                continue
            assert_valid(module, events)
    assert tried > 200


def test_truncated_frames_raise_only_parse_error(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    for name in _ws_fixtures(case):
        text = fixture(case.directory, name)
        for cut in range(len(text)):
            with pytest.raises(ParseError):
                module.parse_frame(text[:cut])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text(venue: tuple[ExchangeModule, Case], text: str) -> None:
    module, _ = venue
    with contextlib.suppress(ParseError):
        assert_valid(module, module.parse_frame(text))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
ENVELOPE_KEYS = ["e", "k", "stream", "data", "topic", "op", "success", "ret_msg", "req_id"]
FRAME_KEYS = st.sampled_from(
    [*ENVELOPE_KEYS, "event", "arg", "code", "msg", "id", "result", "error"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(FRAME_KEYS, JSON, max_size=5))
def test_arbitrary_frame_objects(venue: tuple[ExchangeModule, Case], frame: dict[str, Any]) -> None:
    module, _ = venue
    with contextlib.suppress(ParseError):
        assert_valid(module, module.parse_frame(json.dumps(frame)))


# ----------------------------------------------------------------------------- REST klines


def _open_times(interval: str, first: int, last: int) -> list[int]:
    opens, t = [], floor_open(interval, first)
    t = t if t >= first else next_open(interval, t)
    while t <= last:
        opens.append(t)
        t = next_open(interval, t)
    return opens


def _ranges(interval: str) -> Iterator[tuple[int, int]]:
    step = INTERVAL_MS[interval]
    # Far enough back that OKX must use history-candles, never before 1970.
    start = floor_open(interval, T0 - min(40_000 * step, T0 // 2))
    for candles in (1, 2, 99, 100, 101, 299, 300, 301, 1000, 1001, 1500, 1501, 3456):
        yield start, start + (candles - 1) * step
    yield start + 1, start + 777 * step - 1  # unaligned bounds


@pytest.mark.parametrize("interval", CANONICAL_INTERVALS)
def test_kline_windows_cover_range(venue: tuple[ExchangeModule, Case], interval: str) -> None:
    module, case = venue
    if interval not in module.INTERVALS:
        pytest.skip(f"{module.NAME} does not offer {interval}")
    stream = Stream("BTCUSDT", interval)
    for start, end in _ranges(interval):
        for now in (end + INTERVAL_MS[interval], end + 50_000 * INTERVAL_MS[interval]):
            requests = module.kline_requests(stream, start, end, now)
            windows = [case.window(r) for r in requests]
            assert windows[0][0] == start and windows[-1][1] == end
            for (_, prev_last, _, _), (first, _, _, _) in itertools.pairwise(windows):
                assert first == prev_last + 1  # no gap, no overlap
            for request, (first, last, limit, page) in zip(requests, windows, strict=True):
                assert first <= last and 1 <= limit <= page
                assert len(_open_times(interval, first, last)) <= limit
                assert request.weight >= 1


def test_kline_windows_reject_nothing_for_empty_range(venue: tuple[ExchangeModule, Case]) -> None:
    module, _ = venue
    assert module.kline_requests(BTC_1M, T0, T0 - 1, T0) == []


def test_parse_klines_ascending(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    body = fixture(case.directory, "rest_klines.json").encode()
    candles = module.parse_klines(BTC_1M, 200, body, SERVER_TIME)
    assert [c.open_time for c in candles] == [
        1772461920000,
        1772461980000,
        1772462040000,
        1772462100000,
    ]
    assert [c.closed for c in candles] == [True, True, True, False]
    assert all(c.source is Source.REST and c.exchange == module.NAME for c in candles)
    assert all(c.symbol == "BTCUSDT" and c.interval == "1m" for c in candles)
    by_time = {c.open_time: c for c in candles}
    closed = by_time[1772462040000]
    assert {name: getattr(closed, name) for name in case.closed} == case.closed


def test_rest_error_envelopes(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    error = fixture(case.directory, "rest_error.json").encode()
    for call in (
        lambda: module.parse_klines(BTC_1M, case.error_status, error, SERVER_TIME),
        lambda: module.parse_time(case.error_status, error),
        lambda: module.parse_instruments(case.error_status, error),
    ):
        with pytest.raises(ExchangeError) as info:
            call()
        assert not isinstance(info.value, RateLimited)
        assert info.value.code == case.error_code
    limited = fixture(case.directory, "rest_rate_limited.json").encode()
    with pytest.raises(RateLimited):
        module.parse_klines(BTC_1M, case.rate_limited_status, limited, SERVER_TIME)
    with pytest.raises(RateLimited):
        module.parse_klines(BTC_1M, 429, b"", SERVER_TIME)


REST_GARBAGE = [b"", b"not json", b"{", b"null", b"42", b'"x"', b"[" * 5000, b"\xff\xfe", b"1e400"]


@pytest.mark.parametrize("body", REST_GARBAGE)
def test_rest_garbage_raises_parse_error(venue: tuple[ExchangeModule, Case], body: bytes) -> None:
    module, _ = venue
    for call in (
        lambda: module.parse_klines(BTC_1M, 200, body, SERVER_TIME),
        lambda: module.parse_time(200, body),
        lambda: module.parse_instruments(200, body),
    ):
        with pytest.raises(ParseError):
            call()


def test_mutated_rest_bodies_raise_only_feedd_errors(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    parsers: list[tuple[str, Callable[[bytes], object]]] = [
        ("rest_klines.json", lambda b: module.parse_klines(BTC_1M, 200, b, SERVER_TIME)),
        ("rest_time.json", lambda b: module.parse_time(200, b)),
        (case.instruments[0][0], lambda b: module.parse_instruments(200, b)),
    ]
    for name, parse in parsers:
        for mutated in _mutations(orjson.loads(fixture(case.directory, name))):
            try:
                parse(json.dumps(mutated).encode())
            except FeeddError:
                continue


def test_time(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    assert module.time_request().path.startswith("/")
    assert module.parse_time(200, fixture(case.directory, "rest_time.json").encode()) == (
        case.time_ms
    )


def test_instruments_filter_and_paging(venue: tuple[ExchangeModule, Case]) -> None:
    module, case = venue
    cursor: str | None = None
    for name, symbols, next_cursor in case.instruments:
        request = module.instruments_request(cursor)
        assert request.path.startswith("/")
        if cursor is not None:
            assert cursor in _params(request).values()
        page = module.parse_instruments(200, fixture(case.directory, name).encode())
        assert page == InstrumentsPage(symbols, next_cursor)
        cursor = page.next_cursor
    assert cursor is None  # the last page ends the walk


def test_rest_query_encoding() -> None:
    """Values go out percent-encoded as UTF-8; a value the venue gave encoded goes back as is."""
    request = RestRequest(
        "/x",
        (("symbol", "币安人生USDT"), ("q", "a&b=c d/%"), ("cursor", "first%3DA%26last%3DB")),
        encoded=frozenset({"cursor"}),
    )
    assert request.query() == (
        "symbol=%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT&q=a%26b%3Dc%20d%2F%25"
        "&cursor=first%3DA%26last%3DB"
    )
    # An "encoded" value is still made safe: a stray %, &, # or space cannot split the query.
    odd = RestRequest("/x", (("cursor", "50% a&b#c"),), encoded=frozenset({"cursor"}))
    assert odd.query() == "cursor=50%25%20a%26b%23c"
    assert RestRequest("/x").query() == ""


def test_used_weight_tolerates_odd_headers(venue: tuple[ExchangeModule, Case]) -> None:
    module, _ = venue
    for headers in ({}, {"x-mbx-used-weight-1m": "²"}, {"x-mbx-used-weight-1m": "abc"}):
        assert module.used_weight(headers) is None


def test_batched_bounds_count_and_size() -> None:
    items = ["a" * n for n in (5, 5, 5, 20, 1, 1, 1, 1)]
    chunks = list(batched(items, max_count=3, max_size=12, size=len))
    assert chunks == [("aaaaa", "aaaaa"), ("aaaaa",), ("a" * 20,), ("a", "a", "a"), ("a",)]


@pytest.mark.parametrize("error", [KeyError("k"), IndexError(), TypeError(), ValueError()])
def test_parse_guard_turns_slips_into_parse_error(error: Exception) -> None:
    @parse_guard
    def parser(text: str) -> list[object]:
        raise error

    with pytest.raises(ParseError):
        parser("x")
