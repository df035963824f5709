"""Property tests of every parser of outside input, and of the round trips feedd relies on.

Exchange parsers must answer anything (arbitrary text and bytes, real fixtures with random
mutations) with a result the engine can trust or a feedd error; the store codec and the
config must give back what they were given. Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feedd import config, exchanges
from feedd.candle import Candle, Source
from feedd.errors import ConfigError, ExchangeError, ParseError
from feedd.exchanges import REGISTRY
from feedd.exchanges.contract import (
    ErrorEvent,
    ExchangeModule,
    Ignored,
    InstrumentsPage,
    Notice,
    Pong,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
)
from feedd.store import codec
from feedd.symbols import is_symbol

FIXTURES = Path(__file__).parent / "fixtures"
DIRECTORIES = {"binance_futures": "binance", "bybit_futures": "bybit", "okx_futures": "okx"}
VENUES = sorted(REGISTRY)
SERVER_TIME = 1772462130000
BTC_1M = Stream("BTCUSDT", "1m")
DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
EVENT_TYPES = (
    Candle,
    SubscribeAck,
    SubscribeRejected,
    Pong,
    ServerPing,
    Notice,
    ErrorEvent,
    Ignored,
)

# Every test here together stays well under 20 s on the 2-core box.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def test_every_venue_has_fixtures() -> None:
    assert set(DIRECTORIES) == set(REGISTRY), "a new venue needs its fixture folder listed here"


def _fixtures(venue: str, pattern: str) -> list[str]:
    folder = FIXTURES / DIRECTORIES[venue]
    return [p.read_text().removesuffix("\n") for p in sorted(folder.glob(pattern))]


# ----------------------------------------------------------------------------- what parsers return


def check_events(module: ExchangeModule, events: object) -> None:
    """What the engine may rely on for anything parse_frame returns."""
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, EVENT_TYPES)
        if isinstance(event, Candle):
            check_candle(module, event, Source.WS)


def check_candle(module: ExchangeModule, candle: Candle, source: Source) -> None:
    assert candle.exchange == module.NAME and candle.source is source
    assert candle.interval in module.INTERVALS
    assert module.from_native(module.to_native(candle.symbol)) == candle.symbol
    assert type(candle.open_time) is int and 0 <= candle.open_time < 2**63
    for value in (candle.open, candle.high, candle.low, candle.close, candle.volume):
        assert DECIMAL.fullmatch(value), value
    assert DECIMAL.fullmatch(candle.quote_volume), candle.quote_volume
    assert candle.trades is None or (type(candle.trades) is int and 0 <= candle.trades < 2**63)
    assert type(candle.closed) is bool


def parse_rest(module: ExchangeModule, name: str, status: int, body: bytes) -> None:
    """Run the REST parser a fixture is for; only feedd errors may escape, results are sound."""
    try:
        if "klines" in name or "error" in name or "rate_limited" in name:
            candles = module.parse_klines(BTC_1M, status, body, SERVER_TIME)
            assert isinstance(candles, list)
            for candle in candles:
                check_candle(module, candle, Source.REST)
                assert (candle.symbol, candle.interval) == (BTC_1M.symbol, BTC_1M.interval)
            opens = [c.open_time for c in candles]
            assert opens == sorted(opens)
        elif "time" in name:
            ms = module.parse_time(status, body)
            assert type(ms) is int and 0 <= ms < 2**63
        else:
            page = module.parse_instruments(status, body)
            assert isinstance(page, InstrumentsPage)
            for symbol in page.symbols:
                assert module.from_native(module.to_native(symbol)) == symbol
            assert page.next_cursor is None or isinstance(page.next_cursor, str)
    except (ParseError, ExchangeError):  # RateLimited is an ExchangeError
        pass


# ----------------------------------------------------------------------------- mutations

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# Values that have broken parsers elsewhere: numbers as text and text as numbers, signs,
# exponents, overlong digit runs, non-ASCII digits, int64 edges, empty containers.
NASTY: st.SearchStrategy[Any] = st.sampled_from(
    [
        None, True, False, 0, -1, 2**63, 2**64 - 1, -(2**63) - 1, 1e300, -0.0, 0.5,
        "", " ", "0", "-1", "-0.5", "1e5", "NaN", "Infinity", "0x10", "1_000", "١٢٣", "²",
        "1" * 19, "9" * 40, "9" * 5000, "1.", ".1", "1..2", "1.2.3", "+1", " 1", "\x00",
        [], {}, [[]], {"": None},
    ]
)  # fmt: skip

Path_ = tuple[str | int, ...]


def _paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


_DROP = object()


def _replace(doc: Any, path: Path_, new: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced (or removed, for ``_DROP``)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        out = dict(doc)
        if not rest and new is _DROP:
            del out[head]
        else:
            out[head] = _replace(doc[head], rest, new)
        return out
    items = list(doc)
    assert isinstance(head, int)
    if not rest and new is _DROP:
        del items[head]
    else:
        items[head] = _replace(doc[head], rest, new)
    return items


def _get(doc: Any, path: Path_) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _variants(value: Any) -> list[Any]:
    """Plausible wrong versions of one value: retyped, signed, huge, wrapped."""
    out: list[Any] = [[value], {"v": value}]
    if isinstance(value, bool):
        out += [int(value), str(value).lower()]
    elif isinstance(value, int | float):
        out += [str(value), -value, value * 10**30, float(value) + 0.5]
    elif isinstance(value, str):
        out += ["-" + value, value + "0" * 30, value * 3, value[: len(value) // 2], value.upper()]
        with contextlib.suppress(ValueError):
            out.append(json.loads(value))  # "94172.40" -> 94172.4
    elif isinstance(value, list) and value:
        out += [value + value, value[::-1], value[0]]
    elif isinstance(value, dict):
        out += [list(value.values()), {**value, "extra": 1}]
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` after one to three random changes: drop, retype, sign, enlarge, wrap."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        old = _get(doc, path)
        choice = draw(st.integers(0, 3))
        if choice == 0 and path:
            new: Any = _DROP
        elif choice == 1:
            new = draw(NASTY)
        elif choice == 2:
            new = draw(JSON)
        else:
            new = draw(st.sampled_from(_variants(old)))
        doc = _replace(doc, path, new)
    return doc


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """A fixture mutated as JSON, then maybe cut short (a frame torn mid-way)."""
    out = json.dumps(draw(mutated(json.loads(text))))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, max(len(out) - 1, 0)))]
    return out


# ----------------------------------------------------------------------------- WebSocket frames


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(data=st.data())
def test_mutated_frames(venue: str, data: st.DataObject) -> None:
    module = REGISTRY[venue]
    text = data.draw(st.sampled_from(_fixtures(venue, "ws_*.json")), label="fixture")
    frame = data.draw(mutated_text(text), label="frame")
    try:
        events = module.parse_frame(frame)
    except ParseError:
        return
    check_events(module, events)


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_as_frame(venue: str, raw: bytes) -> None:
    module = REGISTRY[venue]
    # What a text frame may carry after a lenient decode of a corrupted payload.
    try:
        events = module.parse_frame(raw.decode("utf-8", "surrogateescape"))
    except ParseError:
        return
    check_events(module, events)


# ----------------------------------------------------------------------------- REST bodies


def _rest_fixture_names(venue: str) -> list[str]:
    return sorted(p.name for p in (FIXTURES / DIRECTORIES[venue]).glob("rest_*.json"))


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(data=st.data())
def test_mutated_rest_bodies(venue: str, data: st.DataObject) -> None:
    module = REGISTRY[venue]
    name = data.draw(st.sampled_from(_rest_fixture_names(venue)), label="fixture")
    text = (FIXTURES / DIRECTORIES[venue] / name).read_text()
    body = data.draw(mutated_text(text), label="body").encode()
    status = data.draw(st.sampled_from([200, 200, 200, 400, 403, 418, 429, 500, 503]))
    parse_rest(module, name, status, body)


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(
    name=st.sampled_from(["rest_klines.json", "rest_time.json", "rest_instruments.json"]),
    status=st.integers(100, 599),
    body=st.binary(max_size=300),
)
def test_arbitrary_rest_bodies(venue: str, name: str, status: int, body: bytes) -> None:
    parse_rest(REGISTRY[venue], name, status, body)


# ----------------------------------------------------------------------------- symbols

CANONICAL_SYMBOL = (
    st.text(st.characters(categories=("Lu", "Lo", "Nd")), min_size=1, max_size=24)
    .map(lambda base: base + "USDT")
    .filter(is_symbol)
)


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(symbol=CANONICAL_SYMBOL)
def test_symbol_round_trip(venue: str, symbol: str) -> None:
    module = REGISTRY[venue]
    assert module.from_native(module.to_native(symbol)) == symbol


@pytest.mark.parametrize("venue", VENUES)
@FUZZ
@given(native=st.text(max_size=40) | CANONICAL_SYMBOL.map(lambda s: s[:-4] + "-USDT-SWAP"))
def test_native_symbols(venue: str, native: str) -> None:
    module = REGISTRY[venue]
    try:
        symbol = module.from_native(native)
    except ParseError:
        return
    assert module.to_native(symbol) == native


# ----------------------------------------------------------------------------- store codec


@st.composite
def plain_decimals(draw: st.DrawFn, max_decimals: int = codec.MAX_DECIMALS) -> str:
    """Decimal strings as exchanges write them: no exponent, no leading zeros, maybe a sign."""
    decimals = draw(st.integers(0, max_decimals))
    bound = codec.MANTISSA_LIMIT - 1 if max_decimals <= codec.MAX_DECIMALS else 10**40
    mantissa = draw(st.integers(0, bound))
    digits = str(mantissa).rjust(decimals + 1, "0")
    text = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    return ("-" if mantissa and draw(st.booleans()) else "") + text


@FUZZ
@given(text=plain_decimals())
def test_codec_round_trip(text: str) -> None:
    packed = codec.encode(text)
    assert -(2**63) <= packed < 2**63
    assert codec.decode_str(packed) == text
    assert codec.decode_decimal(packed) == decimal.Decimal(text)
    assert codec.decode_float(packed) == float(decimal.Decimal(text))


@FUZZ
@given(text=plain_decimals(max_decimals=30))
def test_codec_rounds_what_does_not_fit(text: str) -> None:
    try:
        packed = codec.encode(text)
    except ValueError:
        # Only a value whose integer part alone overflows the mantissa is refused.
        assert abs(decimal.Decimal(text)) >= codec.MANTISSA_LIMIT - 1
        return
    places = packed & 15
    error = abs(codec.decode_decimal(packed) - decimal.Decimal(text))
    assert error <= decimal.Decimal(5).scaleb(-places - 1)


@FUZZ
@given(
    text=st.one_of(
        plain_decimals(max_decimals=20),
        st.from_regex(r"[-+ _0-9.]{0,22}", fullmatch=True),
        st.text(max_size=24),
    )
)
# Its edges: 2**59 - 1 and 2**59, 15 and 16 decimals, a bare dot at either end, a sign.
@example(text="576460752303423487")
@example(text="576460752303423488")
@example(text="99999999999999999.9")
@example(text="0.123456789012345")
@example(text="0.1234567890123456")
@example(text=".5")
@example(text="5.")
@example(text="-0.5")
def test_codec_fast_path_agrees_with_the_general_one(text: str) -> None:
    """``encode``'s fast path is only a shortcut: whatever it takes, the general path (a
    regex, then Decimal) packs the same way, and what it leaves is refused or packed there."""
    try:
        expected: int | type[ValueError] = codec._encode_slow(text)
    except ValueError:
        expected = ValueError
    try:
        packed: int | type[ValueError] = codec.encode(text)
    except ValueError:
        packed = ValueError
    assert packed == expected


@FUZZ
@given(text=st.text(max_size=40))
def test_codec_refuses_garbage_with_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        codec.encode(text)


# ----------------------------------------------------------------------------- config

CONFIG_KEYS = [field.name for field in attrs.fields(config.Config)]
EXCHANGE_KEYS = [
    field.name for field in attrs.fields(config.ExchangeConfig) if field.name != "name"
]
EXCHANGE_NAMES = st.sampled_from([*VENUES, "kraken", ""])


def _some_of(keys: list[str], value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={key: value for key in keys})


LOOSE_EXCHANGE = _some_of(EXCHANGE_KEYS, JSON | NASTY | st.lists(CANONICAL_SYMBOL | NASTY))
LOOSE_CONFIG = _some_of(CONFIG_KEYS, JSON | NASTY) | st.fixed_dictionaries(
    {"exchanges": st.dictionaries(EXCHANGE_NAMES, LOOSE_EXCHANGE | JSON, max_size=3)},
    optional={key: JSON | NASTY for key in CONFIG_KEYS if key != "exchanges"},
)


@FUZZ
@given(document=JSON | LOOSE_CONFIG)
def test_config_parse_raises_only_config_error(document: Any) -> None:
    try:
        loaded = config.parse(document)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line for the operator
        return
    assert isinstance(loaded.config, config.Config)


# Intervals every venue offers, so any generated exchange section accepts them.
SHARED_INTERVALS = sorted(set.intersection(*(set(m.INTERVALS) for m in REGISTRY.values())))
HOSTS = st.sampled_from(["127.0.0.1", "localhost", "sim.example", "[::1]"])
# Within every duration's bounds (config.SECONDS_BOUNDS): 60 .. 3600 s.
SECONDS = st.floats(min_value=60.0, max_value=3600.0) | st.integers(60, 3600)


def _url(schemes: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        "{}://{}{}{}".format,
        st.sampled_from(schemes),
        HOSTS,
        st.sampled_from(["", ":8443", ":1"]),
        st.sampled_from(["", "/", "/proxy/okx", "/a/"]),
    )


VALID_EXCHANGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "symbols": st.lists(CANONICAL_SYMBOL, max_size=5),
    "enabled": st.booleans(),
    "ws_url": _url(["ws", "wss"]),
    "rest_url": _url(["http", "https"]),
    "archive_url": _url(["http", "https"]),
    "connection_lifetime": SECONDS,
    "silence_timeout": SECONDS,
    "instruments_refresh": SECONDS,
}


def valid_exchange(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Settings valid for venue ``name`` (archive_url only where the venue has an archive:
    elsewhere it is warned about)."""
    fields = dict(VALID_EXCHANGE_FIELDS)
    if exchanges.get(name).ARCHIVE is None:
        del fields["archive_url"]
    return st.fixed_dictionaries({}, optional=fields)


VALID_CONFIG_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "exchanges": st.fixed_dictionaries({}, optional={v: valid_exchange(v) for v in VENUES}),
    "intervals": st.lists(st.sampled_from(SHARED_INTERVALS), min_size=1, max_size=4),
    # the old database_path is an alias of storage's SQLite path: both at once is refused
    "storage": st.one_of(
        st.fixed_dictionaries(
            {"backend": st.just("sqlite")}, optional={"path": st.text(min_size=1, max_size=30)}
        ),
        st.fixed_dictionaries(
            {
                "backend": st.just("postgresql"),
                "dsn": st.from_regex(
                    r"postgresql://[a-z]{1,8}:[a-z0-9]{1,8}@[a-z]{1,8}/[a-z]{1,8}", fullmatch=True
                ),
            }
        ),
    ),
    "role": st.sampled_from(["all", "collector", "api"]),
    "publish": st.fixed_dictionaries(
        {
            "nats": st.fixed_dictionaries(
                {"url": st.sampled_from(["nats://127.0.0.1:4222", "nats://u:p@nats.lan:4222"])},
                optional={"subject_prefix": st.from_regex(r"[a-z]{1,10}", fullmatch=True)},
            )
        }
    ),
    "batch_interval": st.integers(*config.INTEGER_BOUNDS["batch_interval"]),
    "max_records": st.integers(*config.INTEGER_BOUNDS["max_records"]) | st.just(0),
    "bootstrap_load": st.integers(*config.INTEGER_BOUNDS["bootstrap_load"]),
    "port": st.integers(0, 65535),
    # Loopback: another host needs api_token, which the document may leave out.
    "host": st.sampled_from(["127.0.0.1", "localhost", "::1", "127.0.0.2"]),
    "api_token": st.text(min_size=1, max_size=20),
    "allowed_hosts": st.lists(st.from_regex(r"[A-Za-z0-9.-]{1,30}", fullmatch=True), max_size=3),
}
VALID_CONFIG = st.fixed_dictionaries({}, optional=VALID_CONFIG_FIELDS)

DUMPS: dict[str, Callable[[Any], bytes]] = {
    "json": lambda doc: json.dumps(doc).encode(),
    "orjson": orjson.dumps,  # what config.save writes
}


def test_valid_configs_cover_every_key() -> None:
    # A key added to Config must be added to VALID_CONFIG / VALID_EXCHANGE too.
    # api_token_source is set by parse from the environment, never read from a document.
    assert set(VALID_CONFIG_FIELDS) == set(CONFIG_KEYS) - {"api_token_source"}
    assert set(VALID_EXCHANGE_FIELDS) == set(EXCHANGE_KEYS)


@pytest.mark.parametrize("dumps", sorted(DUMPS))
@FUZZ
@given(document=VALID_CONFIG)
def test_config_round_trip(dumps: str, document: dict[str, Any]) -> None:
    parsed = config.parse(document)
    assert parsed.warnings == ()
    first = parsed.config
    again = config.parse(orjson.loads(DUMPS[dumps](first.to_json())))
    assert again.warnings == ()
    assert again.config == first
