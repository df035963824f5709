"""The Reader: limit/since/until rules, missing files, series info and 1m resampling."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import orjson
import pytest

from feedd.candle import Candle, Source
from feedd.intervals import CANONICAL_INTERVALS, DAY_MS, HOUR_MS, MINUTE_MS, floor_open
from feedd.store.database import Database
from feedd.store.reader import CandleRow, Reader, SeriesInfo, database_bytes
from feedd.store.resample import bucket_sql

D0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a day boundary


def minute(
    i: int, *, closed: bool = True, source: Source = Source.WS, sym: str = "BTCUSDT"
) -> Candle:
    # Mixed decimals on purpose ("100.50" vs "101.5"): max/min must compare values, not codes.
    return Candle(
        "binance_futures", sym, "1m", D0 + i * MINUTE_MS,
        f"{100 + i}", f"{100 + i}.50" if i % 2 else f"{100 + i}.5", f"{99 + i}.75",
        f"{100 + i}.1", "1.5", "150.25", i, closed, source,
    )  # fmt: skip


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = Database.open(tmp_path / "r.db")
    # Hour 0 complete; hour 1 misses minute 90; hour 2 has 10 minutes, the last one forming.
    db.write([minute(i) for i in range(129) if i != 90])
    db.write([minute(129, closed=False), minute(5, source=Source.REST)])
    db.write([minute(i, sym="ETHUSDT") for i in range(3)])
    db.close()
    return tmp_path / "r.db"


async def test_candles_limit_since_until(path: Path) -> None:
    reader = Reader(path)
    try:
        newest = await reader.candles("binance_futures", "BTCUSDT", "1m", None, None, 3)
        assert [r.open_time for r in newest] == [D0 + i * MINUTE_MS for i in (127, 128, 129)]
        assert (newest[-1].closed, newest[0].closed) == (False, True)
        first = await reader.candles(
            "binance_futures", "BTCUSDT", "1m", D0 + 4 * MINUTE_MS, None, 2
        )
        assert [r.open_time for r in first] == [D0 + 4 * MINUTE_MS, D0 + 5 * MINUTE_MS]
        assert first[1].source == "rest"
        upto = await reader.candles(
            "binance_futures", "BTCUSDT", "1m", None, D0 + 91 * MINUTE_MS, 2
        )
        assert [r.open_time for r in upto] == [D0 + 89 * MINUTE_MS, D0 + 91 * MINUTE_MS]
        window = await reader.candles("binance_futures", "BTCUSDT", "1m", D0, D0 + MINUTE_MS, 100)
        assert window[0] == CandleRow(D0, 100.0, 100.5, 99.75, 100.1, 1.5, 150.25, 0, True, "ws")
        assert len(window) == 2
        assert await reader.candles("binance_futures", "NOPE", "1m", None, None, 10) == []
    finally:
        reader.close()


async def test_json_forms_match_rows(path: Path) -> None:
    reader = Reader(path)
    rows = await reader.candles("binance_futures", "BTCUSDT", "1m", None, None, 50)
    blob = (await reader.candles_json("binance_futures", "BTCUSDT", "1m", None, None, 50)).body
    reader.close()
    dicts = orjson.loads(blob)
    assert dicts == [attrs.asdict(r) for r in rows]
    assert dicts[-1] == {
        "open_time": D0 + 129 * MINUTE_MS, "open": 229.0, "high": 229.5, "low": 228.75,
        "close": 229.1, "volume": 1.5, "quote_volume": 150.25, "trades": 129,
        "closed": False, "source": "ws",
    }  # fmt: skip
    assert [d["open_time"] for d in dicts] == [r.open_time for r in rows]


async def test_resample_json_matches_rows(path: Path) -> None:
    reader = Reader(path)
    for interval in ("5m", "1h", "1m"):
        rows = await reader.resample("binance_futures", "BTCUSDT", interval, None, None, 20)
        page = await reader.resample_json("binance_futures", "BTCUSDT", interval, None, None, 20)
        blob = page.body
        assert rows and orjson.loads(blob) == [attrs.asdict(r) for r in rows], interval
    reader.close()


async def test_last_closed_and_series(path: Path) -> None:
    reader = Reader(path)
    assert await reader.last_closed_open_time("binance_futures", "BTCUSDT", "1m") == (
        D0 + 128 * MINUTE_MS
    )
    assert await reader.last_closed_open_time("binance_futures", "NOPE", "1m") is None
    assert await reader.series() == [
        SeriesInfo("binance_futures", "BTCUSDT", "1m", 129, D0, D0 + 129 * MINUTE_MS),
        SeriesInfo("binance_futures", "ETHUSDT", "1m", 3, D0, D0 + 2 * MINUTE_MS),
    ]
    assert database_bytes(reader.path) > 0
    reader.close()


async def test_missing_database_reads_empty(tmp_path: Path) -> None:
    reader = Reader(tmp_path / "none.db")
    assert await reader.candles("x", "y", "1m", None, None, 10) == []
    assert (await reader.candles_json("x", "y", "1m", None, None, 10)).body == b"[]"
    assert await reader.resample("x", "y", "1h", None, None, 10) == []
    assert await reader.last_closed_open_time("x", "y", "1m") is None
    assert await reader.series() == []
    assert database_bytes(reader.path) == 0
    sqlite3.connect(tmp_path / "none.db").close()  # exists now, but has no schema yet
    assert await reader.series() == []
    reader.close()


def hour(i0: int, i1: int, *, closed: bool) -> CandleRow:
    """The 1h candle of minutes i0..i1-1 (all present) computed by hand from ``minute``."""
    n = i1 - i0
    return CandleRow(
        D0 + i0 * MINUTE_MS, float(100 + i0), 100 + (i1 - 1) + 0.5, 99 + i0 + 0.75,
        100 + (i1 - 1) + 0.1, 1.5 * n, 150.25 * n, sum(range(i0, i1)), closed, "ws",
    )  # fmt: skip


async def test_resample_hours_by_hand(path: Path) -> None:
    reader = Reader(path)
    got = await reader.resample("binance_futures", "BTCUSDT", "1h", None, None, 10)
    h1 = attrs.evolve(
        hour(60, 120, closed=False),
        volume=1.5 * 59, quote_volume=150.25 * 59, trades=sum(range(60, 120)) - 90,
    )  # fmt: skip
    h0 = hour(0, 60, closed=True)
    assert got == [
        attrs.evolve(h0, source="rest"),  # minute 5 came over REST
        h1,  # minute 90 missing: not complete, not closed
        hour(120, 130, closed=False),  # the last minute is still forming
    ]
    newest = await reader.resample("binance_futures", "BTCUSDT", "1h", None, None, 1)
    assert [r.open_time for r in newest] == [D0 + 2 * HOUR_MS]
    since = await reader.resample("binance_futures", "BTCUSDT", "1h", D0 + 1, None, 5)
    assert [r.open_time for r in since] == [D0 + HOUR_MS, D0 + 2 * HOUR_MS]
    until = await reader.resample("binance_futures", "BTCUSDT", "1h", None, D0 + HOUR_MS + 1, 5)
    assert [r.open_time for r in until] == [D0, D0 + HOUR_MS]
    # Empty buckets are skipped, not counted: a since far before the data still finds it.
    early = await reader.resample("binance_futures", "BTCUSDT", "1h", D0 - 30 * DAY_MS, None, 1)
    assert [r.open_time for r in early] == [D0]
    late = await reader.resample("binance_futures", "BTCUSDT", "1h", D0 + 3 * HOUR_MS, None, 1)
    assert late == []
    reader.close()


async def test_resample_5m_and_1d(path: Path) -> None:
    reader = Reader(path)
    five = await reader.resample("binance_futures", "BTCUSDT", "5m", D0, D0 + 5 * MINUTE_MS, 10)
    assert [(r.open_time, r.open, r.close, r.volume, r.closed) for r in five] == [
        (D0, 100.0, 104.1, 7.5, True),
        (D0 + 5 * MINUTE_MS, 105.0, 109.1, 7.5, True),
    ]
    (day,) = await reader.resample("binance_futures", "BTCUSDT", "1d", None, None, 5)
    assert (day.open_time, day.open, day.close, day.high, day.low) == (
        D0, 100.0, 229.1, 229.5, 99.75,
    )  # fmt: skip
    assert not day.closed
    reader.close()


@pytest.mark.parametrize("interval", [i for i in CANONICAL_INTERVALS if i != "1m"])
def test_bucket_sql_agrees_with_floor_open(interval: str) -> None:
    times = [D0 + k * 7_919_000 * 60 for k in range(-400, 400)] + [D0, D0 - 1, 0 + 5 * DAY_MS]
    conn = sqlite3.connect(":memory:")
    sql = f"SELECT {bucket_sql(interval)} FROM (SELECT ? AS open_time)"
    got = [conn.execute(sql, (t,)).fetchone()[0] for t in times]
    conn.close()
    assert got == [floor_open(interval, t) for t in times]
