"""The read side of the store contract: the same stored candles read back identically from
SQLite and PostgreSQL, for every ``ReadStore`` method (values, JSON bytes, since/until/limit
rules, resampling with partial buckets and source rules, coverage holes, sources, exports in
every format), an empty store, and PostgreSQL's connection failures as ``StoreError``.

Every comparison also holds a few facts of its own (a known sum, a known hole), so that two
backends agreeing on a wrong answer would still fail.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow.parquet as pq
import pytest
import trio

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.intervals import DAY_MS, HOUR_MS, MINUTE_MS
from feedd.store.backend import Backend, ReadStore
from feedd.store.exportrequest import ExportRequest
from feedd.store.postgres import export as pg_export
from feedd.store.postgres.reader import PgReader

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["store_backends"]
BACKENDS = ("sqlite", "postgresql")

EX, SYM = "binance_futures", "BTCUSDT"
#: a Monday, 00:00 UTC, 2 days before a month starts: weeks and months get partial buckets
T0 = int(dt.datetime(2024, 4, 29, tzinfo=dt.UTC).timestamp() * 1000)
MINUTES = 4 * 24 * 60
#: minute indexes with no candle at all
HOLES = (range(50, 53), range(1_000, 1_130), range(3_000, 3_001))
#: minutes stored but still forming (not closed): a hole for coverage, a partial bucket
FORMING = (700, 2_222)
#: minutes of the second venue's series, 40 days after its first ten
FAR = 40 * 24 * 60
#: since and until values: before, at and inside the data, in a hole, at its end, after it
SAMPLE_TIMES = (None, T0 - DAY_MS, T0 + 1, T0 + 59 * MINUTE_MS + 7, T0 + 1_010 * MINUTE_MS)
SAMPLE_TIMES += (T0 + (MINUTES - 1) * MINUTE_MS, T0 + 9 * DAY_MS)


def value(rng: random.Random, whole: int) -> str:
    places = rng.choice((0, 1, 2, 3, 8))
    text = str(rng.randrange(whole))
    if places:
        text += "." + "".join(rng.choice("0123456789") for _ in range(places))
    return text


def truth() -> list[Candle]:
    """Three series: 1m with holes, forming minutes, REST and archive stretches, values with
    trailing zeros and up to 8 decimals, missing trade counts; a native 1h; another venue."""
    rng = random.Random(15)
    out = []
    for n in range(MINUTES):
        if any(n in hole for hole in HOLES):
            continue
        source = Source.REST if 400 <= n < 460 else Source.ARCHIVE if n < 300 else Source.WS
        low = value(rng, 50_000)
        out.append(
            Candle(
                EX,
                SYM,
                "1m",
                T0 + n * MINUTE_MS,
                value(rng, 50_000),
                "60000.10",
                low,
                value(rng, 50_000),
                value(rng, 100),
                value(rng, 10**7),
                None if n % 97 == 0 else rng.randrange(10_000),
                n not in FORMING,
                source,
            )
        )
    out += [
        Candle(EX, SYM, "1h", T0 + h * HOUR_MS, "1.50", "2.0", "0.00000005", "1", "0", "0.10",
               h, h != 40, Source.REST if h % 5 == 0 else Source.WS)
        for h in range(48) if h != 20
    ]  # fmt: skip
    out += [
        Candle("okx_futures", "ETHUSDT", "1m", T0 + n * MINUTE_MS, "0.1", "0.3", "0.1", "0.2",
               "0.1", "0.2", None, True, Source.WS)
        for n in (*range(10), *range(FAR, FAR + 5))
    ]  # fmt: skip
    return out


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from store_backends import make_backend as make  # loaded by pytest_plugins

    return make(kind, request, tmp_path)


def fill(backend: Backend, candles: Sequence[Candle]) -> None:
    conn = backend.open_writer(busy_timeout_ms=2000)
    try:
        for i in range(0, len(candles), 2_000):
            conn.write(candles[i : i + 2_000])
    finally:
        conn.close()


@pytest.fixture
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ReadStore]]:
    """A SQLite and a PostgreSQL reader over the same candles."""
    readers = []
    for kind in ("sqlite", "postgresql"):
        backend = make_backend(kind, request, tmp_path)
        fill(backend, truth())
        readers.append(backend.open_reader())
    yield readers
    for reader in readers:
        reader.close()


def both(stores: list[ReadStore], method: str, *args: Any, **kwargs: Any) -> Any:
    """The answer of both stores to one call, asserted equal."""

    async def ask(store: ReadStore) -> Any:
        found = getattr(store, method)(*args, **kwargs)
        if method == "export":
            return b"".join([chunk async for chunk in found])
        return await found

    sqlite, postgres = (trio.run(ask, store) for store in stores)
    assert postgres == sqlite, (method, args, kwargs)
    return sqlite


def test_candles_and_their_json_are_identical(stores: list[ReadStore]) -> None:
    for since in SAMPLE_TIMES:
        for until in SAMPLE_TIMES:
            for limit in (0, 7, 2_000):
                both(stores, "candles", EX, SYM, "1m", since, until, limit)
                both(stores, "candles_json", EX, SYM, "1m", since, until, limit)
    rows = both(stores, "candles", EX, SYM, "1h")
    assert len(rows) == 47 and rows[0].source == "rest" and rows[0].low == 5e-8
    assert [r.closed for r in rows].count(False) == 1
    page = both(stores, "candles_json", EX, SYM, "1m", T0, None, 3)
    assert (page.count, page.first_open_time, page.last_open_time) == (3, T0, T0 + 2 * MINUTE_MS)
    assert orjson.loads(page.body)[0]["source"] == "archive"
    assert both(stores, "candles", EX, SYM, "5m") == []
    assert both(stores, "candles", "nope", SYM, "1m") == []


def test_closed_open_times_and_last_closed(stores: list[ReadStore]) -> None:
    for before in (*SAMPLE_TIMES, T0 + 701 * MINUTE_MS, T0 + 2_223 * MINUTE_MS):
        both(stores, "last_closed_open_time", EX, SYM, "1m", before)
    last = both(stores, "last_closed_open_time", EX, SYM, "1h")
    assert last == T0 + 47 * HOUR_MS
    assert both(stores, "last_closed_open_time", EX, SYM, "1h", T0 + 41 * HOUR_MS) == (
        T0 + 39 * HOUR_MS
    )
    times = both(stores, "closed_open_times", EX, SYM, "1m", T0, T0 + 3_000 * MINUTE_MS)
    assert T0 + 700 * MINUTE_MS not in times and T0 + 699 * MINUTE_MS in times
    assert len(times) == 3_000 - 3 - 130 - 2
    both(stores, "closed_open_times", EX, SYM, "1m", T0 + DAY_MS, T0)
    both(stores, "closed_open_times", "nope", SYM, "1m", T0, T0 + DAY_MS)


def test_series_and_sources(stores: list[ReadStore]) -> None:
    series = both(stores, "series")
    assert [(s.exchange, s.interval, s.count) for s in series] == [
        (EX, "1h", 47), (EX, "1m", MINUTES - 134), ("okx_futures", "1m", 15)
    ]  # fmt: skip
    sources = both(stores, "sources", EX, SYM, "1m")
    assert sources == {"ws": MINUTES - 134 - 2 - 60 - 297, "rest": 60, "archive": 297}
    both(stores, "sources", EX, SYM, "1h")
    assert both(stores, "sources", "nope", SYM, "1m") == {"ws": 0, "rest": 0, "archive": 0}


@pytest.mark.parametrize("interval", ["3m", "5m", "1h", "4h", "1d", "1w", "1M"])
def test_resample_is_identical(stores: list[ReadStore], interval: str) -> None:
    for since in SAMPLE_TIMES:
        for until in SAMPLE_TIMES[::2]:
            for limit in (1, 5, 1_000):
                both(stores, "resample", EX, SYM, interval, since, until, limit)
                both(stores, "resample_json", EX, SYM, interval, since, until, limit)


def test_resample_buckets_partial_closed_and_sources(stores: list[ReadStore]) -> None:
    hours = {r.open_time: r for r in both(stores, "resample", EX, SYM, "1h", limit=1_000)}
    assert len(hours) == 96 - 1 and T0 + 17 * HOUR_MS not in hours  # minutes 1,020-1,079
    assert not hours[T0 + 16 * HOUR_MS].closed and not hours[T0 + 18 * HOUR_MS].closed
    first = hours[T0]  # minutes 0-59 all archive, 50-52 missing
    assert (first.closed, first.source) == (False, "archive")
    assert hours[T0 + 6 * HOUR_MS].source == "rest"  # minutes 400-459 came over REST
    assert hours[T0 + 6 * HOUR_MS].closed
    assert not hours[T0 + 11 * HOUR_MS].closed  # minute 700 is forming
    assert hours[T0 + 8 * HOUR_MS].closed and hours[T0 + 8 * HOUR_MS].source == "ws"
    assert all(h.high == 60000.1 for h in hours.values())
    okx, far = both(stores, "resample", "okx_futures", "ETHUSDT", "15m")
    assert far.open_time == T0 + FAR * MINUTE_MS and not far.closed
    # buckets on both sides of a 40-day hole, newest and oldest first, any limit
    for interval in ("5m", "1h", "1d", "1w", "1M"):
        for limit in (1, 2, 3):
            both(stores, "resample", "okx_futures", "ETHUSDT", interval, None, None, limit)
            both(stores, "resample", "okx_futures", "ETHUSDT", interval, T0, None, limit)
    # exact sums: ten 0.1 and ten 0.2 add up to 1 and 2, where floats give 0.9999999999999999
    assert (okx.volume, okx.quote_volume, okx.trades, okx.closed) == (1.0, 2.0, None, False)
    day = both(stores, "resample", EX, SYM, "1d", since=T0, limit=2)
    assert [d.closed for d in day] == [False, False]
    month = both(stores, "resample", EX, SYM, "1M")
    assert [m.open_time for m in month] == [
        int(dt.datetime(2024, 4, 1, tzinfo=dt.UTC).timestamp() * 1000),
        int(dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp() * 1000),
    ]
    both(stores, "resample", EX, SYM, "1m", T0, None, 10)  # 1m: the stored candles
    assert both(stores, "resample", "nope", SYM, "1h") == []


def test_coverage_holes(stores: list[ReadStore]) -> None:
    everything = both(stores, "coverage")
    assert [(c.exchange, c.interval) for c in everything] == [
        (EX, "1h"), (EX, "1m"), ("okx_futures", "1m")
    ]  # fmt: skip
    (minutes,) = both(stores, "coverage", EX, SYM, "1m")
    assert [(h.start, h.candles) for h in minutes.missing] == [
        (T0 + 50 * MINUTE_MS, 3), (T0 + 700 * MINUTE_MS, 1), (T0 + 1_000 * MINUTE_MS, 130),
        (T0 + 2_222 * MINUTE_MS, 1), (T0 + 3_000 * MINUTE_MS, 1),
    ]  # fmt: skip
    assert both(stores, "coverage", EX) == everything[:2]
    assert both(stores, "coverage", None, None, "1h") == everything[:1]
    assert both(stores, "coverage", "nope") == []


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_exports_are_identical(
    stores: list[ReadStore], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages smaller than a series, so that keyset paging shows in every export.
    monkeypatch.setattr(pg_export, "CHUNK_ROWS", 1_000)
    requests = [
        ExportRequest(EX, SYM, "1m", False, fmt),
        ExportRequest(EX, SYM, "1m", False, fmt, since=T0 + 40 * MINUTE_MS, limit=2_500),
        ExportRequest(EX, SYM, "1m", False, fmt, until=T0 + 3_500 * MINUTE_MS, limit=1_234),
        ExportRequest(EX, SYM, "1m", False, fmt, since=T0 + DAY_MS, until=T0 + 2 * DAY_MS),
        ExportRequest(EX, SYM, "1h", False, fmt),
        ExportRequest(EX, SYM, "5m", True, fmt),
        ExportRequest(EX, SYM, "1h", True, fmt, until=T0 + DAY_MS, limit=10),
        ExportRequest(EX, SYM, "1d", True, fmt, since=T0 + 1),
        ExportRequest("nope", SYM, "1m", False, fmt),
        ExportRequest(EX, SYM, "1m", False, fmt, since=T0 + 9 * DAY_MS),
    ]
    for request in requests:
        if fmt != "parquet":
            both(stores, "export", request)
            continue
        files = [trio.run(_collect, store, request) for store in stores]
        sqlite, postgres = (pq.read_table(io.BytesIO(f)) for f in files)
        assert postgres.equals(sqlite), request
    text = both(stores, "export", ExportRequest(EX, SYM, "1h", False, fmt))
    if fmt == "csv":
        lines = text.decode().splitlines()
        assert lines[0].startswith("open_time,open,") and len(lines) == 48
        assert lines[1] == f"{T0},1.50,2.0,0.00000005,1,0,0.10,0,true,rest"


async def _collect(store: ReadStore, request: ExportRequest) -> bytes:
    return b"".join([chunk async for chunk in store.export(request)])


def test_an_empty_store_reads_as_empty(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Nothing was ever written: no SQLite file, no schema in the PostgreSQL database.
    readers = [make_backend(kind, request, tmp_path).open_reader() for kind in BACKENDS]
    try:
        assert both(readers, "candles", EX, SYM, "1m") == []
        assert both(readers, "candles_json", EX, SYM, "1m").body == b"[]"
        assert both(readers, "last_closed_open_time", EX, SYM, "1m") is None
        assert both(readers, "closed_open_times", EX, SYM, "1m", 0, T0) == []
        assert both(readers, "series") == []
        assert both(readers, "resample", EX, SYM, "1h") == []
        assert both(readers, "resample_json", EX, SYM, "1h").count == 0
        assert both(readers, "coverage") == []
        assert both(readers, "sources", EX, SYM, "1m") == {"ws": 0, "rest": 0, "archive": 0}
        for fmt in ("csv", "ndjson"):
            both(readers, "export", ExportRequest(EX, SYM, "1m", False, fmt))
            both(readers, "export", ExportRequest(EX, SYM, "1h", True, fmt))
        parquet = trio.run(_collect, readers[1], ExportRequest(EX, SYM, "1m", False, "parquet"))
        assert pq.read_table(io.BytesIO(parquet)).num_rows == 0
    finally:
        for reader in readers:
            reader.close()


async def test_a_lost_server_is_a_store_error_without_the_password(
    pg_server: PgServer,
    pg_dsn: str,
) -> None:
    reader = PgReader(pg_dsn)
    try:
        assert await reader.series() == []
        pg_server.stop()
        with pytest.raises(StoreError) as caught:
            await reader.series()
        message = str(caught.value)
        assert "\n" not in message and "Pg-Secret" not in message
        # the pooled connection broke, so a new one was tried: the server is not there
        assert re.match(r"cannot connect to postgresql://feedd:\*\*\*@127\.0\.0\.1:\d+/t_", message)
        assert "Connection refused" in message
        pg_server.start()
        assert await reader.series() == []  # a new connection once the server is back
    finally:
        reader.close()


async def test_a_terminated_pooled_connection_is_replaced_unseen(
    pg_server: PgServer,
    pg_dsn: str,
) -> None:
    reader = PgReader(pg_dsn)
    try:
        assert await reader.coverage() == []
        assert pg_server.terminate(pg_dsn.rsplit("/", 1)[1], "feedd-reader") == 1
        assert await reader.coverage() == []  # retried once on a fresh connection
    finally:
        reader.close()


async def test_a_wrong_password_is_one_line_naming_no_password(
    pg_server: PgServer,
    pg_dsn: str,
) -> None:
    reader = PgReader(pg_dsn.replace("Pg-Secret-7391", "wrong-Secret"))
    try:
        with pytest.raises(StoreError) as caught:
            await reader.candles(EX, SYM, "1m")
        assert "\n" not in str(caught.value) and "Secret" not in str(caught.value)
        assert "password authentication failed" in str(caught.value)
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_odd_decimal_texts_export_identically(
    request: pytest.FixtureRequest, tmp_path: Path, fmt: str
) -> None:
    # Leading zeros, a bare point, a negative zero, trailing zeros: both stores print each
    # value the same normalised way (SQLite's codec and numeric's own output).
    odd = ("007.50", ".5", "5.", "-0.0", "0.000", "123456789012.123")
    candles = [
        Candle(EX, "ODDUSDT", "1m", T0 + i * MINUTE_MS, *(odd[(i + k) % 6] for k in range(6)),
               i, True, Source.WS)
        for i in range(6)
    ]  # fmt: skip
    readers = []
    for kind in BACKENDS:
        backend = make_backend(kind, request, tmp_path)
        fill(backend, candles)
        readers.append(backend.open_reader())
    try:
        text = both(readers, "export", ExportRequest(EX, "ODDUSDT", "1m", False, fmt))
        assert b"7.50" in text and b"0.5" in text and b"007" not in text
        both(readers, "candles_json", EX, "ODDUSDT", "1m")
        both(readers, "resample_json", EX, "ODDUSDT", "3m")
    finally:
        for reader in readers:
            reader.close()
