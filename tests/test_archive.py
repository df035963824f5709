"""Bulk archives: Binance's planner, CSV and checksum parsers, the fetcher against the simulated
data.binance.vision on loopback, and ARCHIVE candles through the store's readers.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing
from e2e import stored_closed

from feedd import config
from feedd.candle import Candle, Source
from feedd.engine.archive import ArchiveBatch, _unzip_and_parse, fetch_archive
from feedd.errors import ArchiveError, ConfigError, ParseError, TransportError
from feedd.exchanges import REGISTRY, binance, bybit, okx
from feedd.exchanges.binance_archive import (
    archive_files,
    checksum_of,
    parse_archive_csv,
)
from feedd.exchanges.contract import ExchangeModule
from feedd.intervals import DAY_MS, MINUTE_MS
from feedd.sim import SimSettings, Simulator, open_simulator
from feedd.sim.clock import DEFAULT_START_MS
from feedd.store import resample
from feedd.store.database import Database
from feedd.store.exportrequest import ExportRequest
from feedd.store.reader import Reader

BN = "binance_futures"
T0 = DEFAULT_START_MS  # 2026-03-02 14:30 UTC
JAN_1 = 1_767_225_600_000  # 2026-01-01
FEB_1 = 1_769_904_000_000  # 2026-02-01
MAR_1 = 1_772_323_200_000  # 2026-03-01
MAR_2 = MAR_1 + DAY_MS
ROOT = "/data/futures/um"


# ----------------------------------------------------------------------------- planner


def test_planner_months_then_days_up_to_yesterday() -> None:
    files = archive_files("BTCUSDT", "1m", JAN_1 + 14 * DAY_MS, T0, T0)
    monthly = f"{ROOT}/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2026-01.zip"
    assert files[0].path == monthly and files[0].checksum_path == monthly + ".CHECKSUM"
    assert (files[0].first_open_ms, files[0].last_open_ms) == (JAN_1, FEB_1 - MINUTE_MS)
    # February ended a day ago: not yet "early next month" enough, so its days come daily,
    # then March 1 (yesterday); today (March 2) is left to REST.
    days = files[1:]
    assert len(days) == 28 + 1
    assert days[0].path == f"{ROOT}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-02-01.zip"
    assert days[-1].path == f"{ROOT}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-03-01.zip"
    assert (days[-1].first_open_ms, days[-1].last_open_ms) == (MAR_1, MAR_2 - MINUTE_MS)
    assert all(b.first_open_ms == a.last_open_ms + MINUTE_MS for a, b in itertools.pairwise(files))
    # a week later February is published as one file
    later = archive_files("BTCUSDT", "1h", FEB_1, MAR_1 - 1, MAR_1 + 7 * DAY_MS)
    assert [f.name for f in later] == ["BTCUSDT-1h-2026-02.zip"]
    assert later[0].last_open_ms == MAR_1 - 3_600_000


def test_planner_edges() -> None:
    # a range inside one unpublished month starts at its first day, not the month's
    files = archive_files("ETHUSDT", "15m", FEB_1 + 10 * DAY_MS + 5, FEB_1 + 11 * DAY_MS, T0)
    assert [f.name for f in files] == ["ETHUSDT-15m-2026-02-11.zip", "ETHUSDT-15m-2026-02-12.zip"]
    assert archive_files("BTCUSDT", "1m", T0 - 60_000, T0, T0) == []  # today only
    assert archive_files("BTCUSDT", "1w", JAN_1, T0, T0) == []  # not an archive interval
    assert archive_files("BTCUSDT", "1M", JAN_1, T0, T0) == []
    assert archive_files("BTCUSDT", "1m", T0, JAN_1, T0) == []
    han = archive_files("币安人生USDT", "1d", MAR_1, MAR_1, T0)[0]
    assert han.path.endswith("/%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT-1d-2026-03-01.zip")


# ----------------------------------------------------------------------------- parsers

ROW = "1772323200000,94172.40,94180.1,94100,94110.5,12.345,1772323259999,1162000.5,321,6.1,574000,0"
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def test_parse_csv_with_and_without_header_and_micros() -> None:
    plain = parse_archive_csv(ROW.encode() + b"\n", "BTCUSDT", "1m")
    headed = parse_archive_csv(f"{HEADER}\n{ROW}\n".encode(), "BTCUSDT", "1m")
    micros = parse_archive_csv(
        ROW.replace("1772323200000", "1772323200000000", 1).encode(), "BTCUSDT", "1m"
    )
    expected = Candle(
        BN, "BTCUSDT", "1m", MAR_1, "94172.40", "94180.1", "94100", "94110.5", "12.345",
        "1162000.5", 321, True, Source.ARCHIVE,
    )  # fmt: skip
    assert plain == headed == micros == [expected]
    # CRLF line ends and rows out of order are fine: oldest first
    later = ROW.replace("1772323200000", "1772323260000", 1)
    both = parse_archive_csv(f"{later}\r\n{ROW}\r\n".encode(), "BTCUSDT", "1m")
    assert [c.open_time for c in both] == [MAR_1, MAR_1 + MINUTE_MS]


@pytest.mark.parametrize(
    "text",
    [
        ROW.replace("94172.40", "-1"),
        ROW.replace("94172.40", "1e5"),
        ",".join(ROW.split(",")[:8]),
        ROW.replace("1772323200000", "1772323200001", 1),  # not a minute's open
        ROW.replace("1772323200000", "1772323200000123", 1),  # µs with a fraction of a ms
        ROW.replace(",321,", ",x,"),
        f"{HEADER}\n{HEADER}",
    ],
)
def test_parse_csv_rejects_garbage(text: str) -> None:
    with pytest.raises(ParseError):
        parse_archive_csv(text.encode(), "BTCUSDT", "1m")
    with pytest.raises(ParseError):
        parse_archive_csv(b"\xff\xfe", "BTCUSDT", "1m")


def test_checksum_file() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert checksum_of(f"{digest.upper()}  BTCUSDT-1m-2026-03-01.zip\n") == digest
    for bad in ("", "abc  BTCUSDT-1m-2026-03-01.zip", "<Error>NoSuchKey</Error>"):
        with pytest.raises(ParseError):
            checksum_of(bad)


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_unzip_truncated_empty_and_oversized() -> None:
    layout = binance.ARCHIVE
    assert layout is not None
    good = _zip({"BTCUSDT-1m-2026-03-01.csv": ROW.encode()})
    assert len(_unzip_and_parse(layout, good, "f.zip", "BTCUSDT", "1m")) == 1
    bad = {
        "truncated": good[: len(good) // 2],
        "two files": _zip({"a.csv": ROW.encode(), "b.csv": ROW.encode()}),
        "not a zip": b"<html>502</html>",
        "bad csv": _zip({"a.csv": b"open_time\nnonsense"}),
    }
    for problem, data in bad.items():
        with pytest.raises(ArchiveError, match=r"f\.zip") as caught:
            _unzip_and_parse(layout, data, "f.zip", "BTCUSDT", "1m")
        assert caught.value.file == "f.zip", problem
    small = attrs.evolve(layout, max_file_bytes=50)
    with pytest.raises(ArchiveError, match="limit"):
        _unzip_and_parse(small, _zip({"a.csv": ROW.encode() * 3}), "f.zip", "BTCUSDT", "1m")


def test_only_binance_has_an_archive() -> None:
    assert bybit.ARCHIVE is None and okx.ARCHIVE is None
    layout = binance.ARCHIVE
    assert layout is not None and layout.default_url == "https://data.binance.vision"
    assert layout.files is archive_files and "1m" in layout.intervals
    assert set(REGISTRY) == {BN, bybit.NAME, okx.NAME}


# ----------------------------------------------------------------------------- sim + fetcher


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def sim(clock: trio.testing.MockClock) -> AsyncIterator[Simulator]:
    # 30 days of history: starts 2026-01-31 14:30, so January's file is a partial one
    async with open_simulator(SimSettings(venues=(BN,))) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _as_truth(c: Candle) -> tuple[Any, ...]:
    return (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades)


async def _collect(
    sim: Simulator, http: httpx.AsyncClient, start: int, end: int, **kw: Any
) -> list[ArchiveBatch]:
    module = kw.pop("module", binance)
    base = kw.pop("base", sim.venues[BN].archive_url)  # type: ignore[attr-defined]
    symbol, interval = kw.pop("symbol", "BTCUSDT"), kw.pop("interval", "1m")
    return [
        b
        async for b in fetch_archive(module, http, base, symbol, interval, start, end, sim.now_ms())
    ]


async def test_fetch_equals_truth(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    start, end = JAN_1 + 30 * DAY_MS, FEB_1 + 2 * DAY_MS - 1
    batches = await _collect(sim, http, start, end)
    assert [b.file.name for b in batches] == [
        "BTCUSDT-1m-2026-01.zip",
        "BTCUSDT-1m-2026-02-01.zip",
        "BTCUSDT-1m-2026-02-02.zip",
    ]
    assert all(b.ok for b in batches)
    assert (batches[0].first_open_ms, batches[-1].last_open_ms) == (start, end + 1 - MINUTE_MS)
    got = [c for b in batches for c in b.candles]
    truth = sim.truth(BN, "BTCUSDT", "1m", start, end)
    # history starts 2026-01-31 14:30: the month's file holds only what exists
    assert truth[0].open_time == T0 - 30 * DAY_MS
    assert [_as_truth(c) for c in got] == [attrs.astuple(t) for t in truth]
    assert all(c.closed and c.source is Source.ARCHIVE for c in got)
    # a range cut inside a file yields only the candles asked for
    part = await _collect(sim, http, FEB_1 + 5 * MINUTE_MS, FEB_1 + 7 * MINUTE_MS, interval="1m")
    assert [c.open_time for c in part[0].candles] == [FEB_1 + i * MINUTE_MS for i in (5, 6, 7)]


async def test_fetched_batches_store_exactly_the_truth(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """What a backfill job does with the batches: write them; the store holds the truth."""
    start, end = FEB_1 - DAY_MS, FEB_1 + DAY_MS - 1
    db = Database.open(tmp_path / "a.db")
    try:
        for batch in await _collect(sim, http, start, end, symbol="ETHUSDT"):
            db.write(batch.candles)
    finally:
        db.close()
    stored = stored_closed(tmp_path / "a.db", BN, "ETHUSDT", "1m")
    truth = {t.open_time: attrs.astuple(t)[1:] for t in sim.truth(BN, "ETHUSDT", "1m", start, end)}
    assert len(stored) == 570 + 1440 and stored == truth  # history starts Jan 31 14:30


async def test_archive_serving_rules(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    venue: Any = sim.venues[BN]
    base = venue.archive_url + f"{ROOT}/daily/klines/BTCUSDT/1h/BTCUSDT-1h-"

    async def status(url: str) -> int:
        return (await http.get(url)).status_code

    yesterday = await http.get(base + "2026-03-01.zip")
    checksum = await http.get(base + "2026-03-01.zip.CHECKSUM")
    assert yesterday.status_code == checksum.status_code == 200
    digest = hashlib.sha256(yesterday.content).hexdigest()
    assert checksum.text == f"{digest}  BTCUSDT-1h-2026-03-01.zip\n"
    with zipfile.ZipFile(io.BytesIO(yesterday.content)) as archive:
        [name] = archive.namelist()
        lines = archive.read(name).decode().splitlines()
    assert name == "BTCUSDT-1h-2026-03-01.csv" and lines[0] == HEADER and len(lines) == 25
    rest = await http.get(
        venue.rest_url + "/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1h", "startTime": MAR_1, "limit": 24},
    )
    assert [line.split(",") for line in lines[1:]] == [[str(v) for v in r] for r in rest.json()]
    # the same bytes again (deterministic), and from a second simulator
    assert (await http.get(base + "2026-03-01.zip")).content == yesterday.content
    async with open_simulator(SimSettings(venues=(BN,))) as other:
        mirror: Any = other.venues[BN]
        again = await http.get(mirror.archive_url + base.split("/archive")[1] + "2026-03-01.zip")
        assert again.content == yesterday.content
    month = venue.archive_url + f"{ROOT}/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-"
    assert await status(month + "2026-02.zip") == 200  # ended yesterday
    assert await status(month + "2026-03.zip") == 404  # not over
    assert await status(base + "2026-03-02.zip") == 404  # today
    assert await status(base + "2026-03-02.zip.CHECKSUM") == 404
    assert await status(base + "2026-01-30.zip") == 404  # before the history
    assert await status(base.replace("1h/BTCUSDT-1h", "1w/BTCUSDT-1w") + "2026-03-01.zip") == 404
    assert await status(base.replace("BTCUSDT-1h", "ETHUSDT-1h") + "2026-03-01.zip") == 404
    assert await status(base + "2026-02-30.zip") == 404
    assert await status(venue.archive_url + "/data/nothing") == 404
    # a day later, March 2 is published
    await sim.sleep_until_ms(MAR_2 + DAY_MS)
    assert await status(base + "2026-03-02.zip") == 200


async def test_header_only_from_2022(clock: trio.testing.MockClock) -> None:
    old, new = 1_640_908_800_000, 1_640_995_200_000  # 2021-12-31, 2022-01-01
    settings = SimSettings(venues=(BN,), history_days=(T0 - old) / DAY_MS + 1)
    async with open_simulator(settings) as s, httpx.AsyncClient() as http:
        archive: Any = s.venues[BN].archive  # type: ignore[attr-defined]
        assert not archive.csv("BTCUSDT", "1h", old, old + DAY_MS).startswith(b"open_time")
        assert archive.csv("BTCUSDT", "1h", new, new + DAY_MS).startswith(b"open_time,")
        batches = await _collect(s, http, old, new + DAY_MS - 1, interval="1h")
        assert [b.file.name for b in batches] == [
            "BTCUSDT-1h-2021-12.zip",
            "BTCUSDT-1h-2022-01.zip",
        ]
        got = [c for b in batches for c in b.candles]
        truth = s.truth(BN, "BTCUSDT", "1h", old, new + DAY_MS - 1)
        assert len(got) == 48 and [_as_truth(c) for c in got] == [attrs.astuple(t) for t in truth]


async def test_bad_checksum_and_missing_file_leave_the_range_to_rest(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    venue: Any = sim.venues[BN]
    venue.faults.corrupt_archive("BTCUSDT-1h-2026-02-02.zip")
    answer = await http.post(
        venue.rest_url + "/_sim/fault",
        content=orjson.dumps({"action": "hide_archive", "name": "BTCUSDT-1h-2026-02-03.zip"}),
    )
    assert answer.json()["ok"]
    batches = await _collect(sim, http, FEB_1, FEB_1 + 4 * DAY_MS - 1, interval="1h")
    assert [(b.published, b.error is None, len(b.candles)) for b in batches] == [
        (True, True, 24),
        (True, False, 0),
        (False, True, 0),
        (True, True, 24),
    ]
    error = batches[1].error
    assert error is not None and error.file == "BTCUSDT-1h-2026-02-02.zip"
    assert "SHA-256" in str(error)
    assert (batches[2].first_open_ms, batches[2].last_open_ms) == (
        FEB_1 + 2 * DAY_MS,
        FEB_1 + 3 * DAY_MS - 3_600_000,
    )
    venue.faults.clear()
    assert all(
        b.ok for b in await _collect(sim, http, FEB_1, FEB_1 + 4 * DAY_MS - 1, interval="1h")
    )


async def test_size_limit_transport_errors_and_no_archive(
    clock: trio.testing.MockClock, sim: Simulator, http: httpx.AsyncClient
) -> None:
    assert binance.ARCHIVE is not None
    tiny = SimpleNamespace(NAME=BN, ARCHIVE=attrs.evolve(binance.ARCHIVE, max_file_bytes=200))
    [batch] = await _collect(
        sim, http, MAR_1, MAR_2 - 1, interval="1h", module=cast(ExchangeModule, tiny)
    )
    assert batch.error is not None and "limit" in str(batch.error) and not batch.candles
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TransportError):
            await _collect(sim, http, MAR_1, MAR_2 - 1, base=f"http://127.0.0.1:{port}")
    with pytest.raises(ArchiveError, match="no bulk archive"):
        await _collect(sim, http, MAR_1, MAR_2 - 1, module=bybit)


# ----------------------------------------------------------------------------- store


def _candle(i: int, source: Source, closed: bool = True) -> Candle:
    return Candle(
        BN, "BTCUSDT", "1m", MAR_1 + i * MINUTE_MS, "1.5", "2", "1", "1.75", "3", "4.5", 7,
        closed, source,
    )  # fmt: skip


async def test_archive_source_through_the_store(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = Database.open(path)
    db.write([_candle(i, Source.ARCHIVE) for i in range(8)])
    db.write([_candle(i, Source.REST) for i in range(8, 15)] + [_candle(15, Source.WS)])
    # an archive candle is closed: a forming update does not replace it
    db.write([_candle(3, Source.WS, closed=False)])
    db.close()
    reader = Reader(path)
    try:
        rows = await reader.candles(BN, "BTCUSDT", "1m", MAR_1, None, 100)
        assert [r.source for r in rows] == ["archive"] * 8 + ["rest"] * 7 + ["ws"]
        assert rows[3].closed
        page = orjson.loads((await reader.candles_json(BN, "BTCUSDT", "1m", MAR_1)).body)
        assert page[0]["source"] == "archive"
        assert await reader.sources(BN, "BTCUSDT", "1m") == {"ws": 1, "rest": 7, "archive": 8}
        for fmt in ("csv", "ndjson"):
            request = ExportRequest(BN, "BTCUSDT", "1m", False, fmt)
            text = b"".join([chunk async for chunk in reader.export(request)]).decode()
            assert text.count("archive") == 8 and text.count("rest") == 7, fmt
        request = ExportRequest(BN, "BTCUSDT", "5m", True, "csv", since=MAR_1)
        text = b"".join([chunk async for chunk in reader.export(request)]).decode()
        # buckets: archive only, archive + rest, rest only, ws only
        assert [line.rsplit(",", 1)[1] for line in text.splitlines()[1:]] == [
            "archive",
            "rest",
            "rest",
            "ws",
        ]
    finally:
        reader.close()
    conn = sqlite3.connect(path)
    sources = conn.execute("SELECT source, count(*) FROM ohlcv GROUP BY 1 ORDER BY 1").fetchall()
    assert sources == [("archive", 8), ("rest", 7), ("ws", 1)]
    buckets = resample.query(
        conn, BN, "BTCUSDT", "5m", MAR_1, MAR_1 + 20 * MINUTE_MS, newest=False, limit=10
    )
    assert [b[9] for b in buckets] == ["archive", "rest", "rest", "ws"]
    # the exact (Python) aggregation, for values past 64 bits, agrees with SQL's
    rows = conn.execute(
        "SELECT open_time, open, high, low, close, volume, quote_volume, trades, flags"
        " FROM candles ORDER BY open_time"
    ).fetchall()
    exact = [
        resample._aggregate_exact(
            MAR_1 + i * MINUTE_MS, MAR_1 + (i + 5) * MINUTE_MS, rows[i : i + 5]
        )[9]
        for i in range(0, 16, 5)
    ]
    assert exact == ["archive", "rest", "rest", "ws"]
    conn.close()


def test_flag_units_pick_the_bucket_source() -> None:
    units = resample._flag_units
    assert resample._bucket_source(sum(units(f) for f in (5, 5, 1))) == "archive"
    assert resample._bucket_source(sum(units(f) for f in (5, 3, 1))) == "rest"
    assert resample._bucket_source(sum(units(f) for f in (1, 1))) == "ws"
    assert resample._bucket_source(units(4) * 44_640) == "archive"  # a month of minutes


# ----------------------------------------------------------------------------- config


def test_archive_url_config() -> None:
    exchanges = {
        BN: {"archive_url": "http://127.0.0.1:9/archive/"},
        bybit.NAME: {"archive_url": "https://example.invalid"},
    }
    loaded = config.parse({"exchanges": exchanges})
    assert loaded.config.exchanges[BN].archive_url == "http://127.0.0.1:9/archive"
    assert loaded.warnings == (
        "exchanges.bybit_futures.archive_url: bybit_futures has no bulk archive, ignored",
    )
    saved = loaded.config.to_json()["exchanges"][BN]
    assert saved["archive_url"] == "http://127.0.0.1:9/archive"
    assert config.parse({"exchanges": {BN: {}}}).config.exchanges[BN].archive_url is None
    with pytest.raises(ConfigError, match=r"exchanges\.binance_futures\.archive_url"):
        config.parse({"exchanges": {BN: {"archive_url": "ftp://x"}}})


def test_an_old_ohlcv_view_is_replaced_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Database.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP VIEW ohlcv")
    conn.execute("CREATE VIEW ohlcv AS SELECT 'rest' AS source")  # as an older feedd made it
    conn.commit()
    conn.close()
    db = Database.open(path)
    db.write([_candle(0, Source.ARCHIVE)])
    db.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT source FROM ohlcv").fetchall() == [("archive",)]
    conn.close()
