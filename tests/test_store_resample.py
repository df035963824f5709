"""Resampling is exact: decimal sums without float artefacts, calendar-true bucket boundaries,
and agreement with a Decimal reference on random series (both the SQL and the Python path)."""

from __future__ import annotations

import datetime as dt
import decimal
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import msgspec
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from feedd.candle import Candle, Source
from feedd.intervals import MINUTE_MS
from feedd.store import resample as resample_module
from feedd.store.database import Database
from feedd.store.reader import CandleRow, Reader

EX, SYM = "binance_futures", "BTCUSDT"
UTC = dt.UTC


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp() * 1000)


def one(t: int, **values: str | int | bool | Source | None) -> Candle:
    fields: dict[str, str | int | bool | Source | None] = {
        "open": "100.0", "high": "101.0", "low": "99.0", "close": "100.5", "volume": "1.0",
        "quote_volume": "100.0", "trades": 1, "closed": True, "source": Source.WS,
    }  # fmt: skip
    fields.update(values)
    return Candle(EX, SYM, "1m", t, **fields)


def store(path: Path, candles: Sequence[Candle]) -> None:
    db = Database.open(path)
    try:
        for i in range(0, len(candles), 5000):
            db.write(candles[i : i + 5000])
        assert db.rejected == 0
    finally:
        db.close()


def resample(
    path: Path, interval: str, since: int | None = None, until: int | None = None, limit: int = 50
) -> list[CandleRow]:
    async def run() -> list[CandleRow]:
        reader = Reader(path)
        try:
            return await reader.resample(EX, SYM, interval, since, until, limit)
        finally:
            reader.close()

    return trio.run(run)


def test_sums_print_as_the_exact_decimal(tmp_path: Path) -> None:
    t0 = ms(2024, 1, 1)
    store(tmp_path / "db", [
        one(t0, volume="0.1", quote_volume="1.1", high="100.49", low="99.9"),
        one(t0 + MINUTE_MS, volume="0.2", quote_volume="2.20", high="100.5", low="100"),
        one(t0 + 2 * MINUTE_MS, volume="0.3", quote_volume="0", high="100.1", low="99.95"),
    ])  # fmt: skip
    (row,) = resample(tmp_path / "db", "3m")
    # Float sums give 0.6000000000000001 and 3.3000000000000003; codes compare 100.49 > 100.5.
    assert orjson.dumps([row.volume, row.quote_volume]) == b"[0.6,3.3]"
    assert (row.high, row.low) == (100.5, 99.9)
    assert row.closed


def test_a_row_with_more_decimals_than_the_newest_rows(tmp_path: Path) -> None:
    t0 = ms(2024, 1, 1)
    rows = [one(t0 + i * MINUTE_MS, volume="1.5", low="99.5") for i in range(120)]
    rows[3] = one(t0 + 3 * MINUTE_MS, volume="0.001", low="99.125")
    store(tmp_path / "db", rows)
    old, new = resample(tmp_path / "db", "1h")
    assert (old.volume, old.low) == (88.501, 99.125)
    assert (new.volume, new.low) == (90.0, 99.5)


def test_values_past_64_bits_fall_back_to_python(tmp_path: Path) -> None:
    t0 = ms(2024, 1, 1)
    big = str(2**59 - 1)
    rows = [one(t0 + i * MINUTE_MS, volume=big) for i in range(20)]  # the sum overflows
    rows += [one(t0 + (60 + i) * MINUTE_MS, quote_volume="0.001") for i in range(60)]
    rows[20] = one(t0 + 60 * MINUTE_MS, quote_volume=big)  # scaled by 1000, the product does
    store(tmp_path / "db", rows)
    first, second = resample(tmp_path / "db", "1h")
    assert first.volume == float(20 * (2**59 - 1))
    assert second.quote_volume == float(2**59 - 1 + decimal.Decimal("0.059"))
    assert (first.closed, second.closed) == (False, True)


def test_week_and_month_boundaries(tmp_path: Path) -> None:
    # Sunday 2024-02-25 → Monday 2024-02-26, and the leap day → March.
    around = [ms(2024, 2, 25, 23, 59), ms(2024, 2, 26), ms(2024, 2, 29, 23, 59), ms(2024, 3, 1)]
    store(tmp_path / "db", [one(t, volume=f"{i + 1}") for i, t in enumerate(around)])
    weeks = resample(tmp_path / "db", "1w")
    assert [(r.open_time, r.volume) for r in weeks] == [
        (ms(2024, 2, 19), 1.0),
        (ms(2024, 2, 26), 9.0),
    ]
    months = resample(tmp_path / "db", "1M")
    assert [(r.open_time, r.volume) for r in months] == [
        (ms(2024, 2, 1), 6.0),
        (ms(2024, 3, 1), 4.0),
    ]
    days = resample(tmp_path / "db", "1d", since=ms(2024, 2, 26), until=ms(2024, 2, 29, 12))
    assert [(r.open_time, r.volume) for r in days] == [
        (ms(2024, 2, 26), 2.0),
        (ms(2024, 2, 29), 3.0),
    ]
    fours = resample(tmp_path / "db", "4h", None, ms(2024, 2, 26, 3, 59), limit=1)
    assert [r.open_time for r in fours] == [ms(2024, 2, 26)]


def test_a_complete_leap_february_is_closed(tmp_path: Path) -> None:
    start, end = ms(2024, 2, 1), ms(2024, 3, 1)
    minutes = [one(t) for t in range(start - MINUTE_MS, end + MINUTE_MS, MINUTE_MS)]
    store(tmp_path / "db", minutes)
    jan, feb, mar = resample(tmp_path / "db", "1M")
    assert (jan.closed, feb.closed, mar.closed) == (False, True, False)
    assert feb.trades == 29 * 1440 and feb.volume == 29 * 1440.0
    weeks = resample(tmp_path / "db", "1w", since=ms(2024, 2, 5), limit=3)
    assert [(w.open_time, w.closed) for w in weeks] == [
        (ms(2024, 2, 5), True), (ms(2024, 2, 12), True), (ms(2024, 2, 19), True),
    ]  # fmt: skip


# --- agreement with a Decimal reference -----------------------------------------------------

BASE = ms(2024, 3, 31, 22)  # Sunday: rows from BASE - 90 min cross 4h, a day, week, month
INTERVALS = ["3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w", "1M"]


def bucket_of(interval: str, t: int) -> tuple[int, int]:
    """Open and end of the bucket holding ``t``, from the calendar (not feedd.intervals)."""
    d = dt.datetime.fromtimestamp(t / 1000, UTC)
    if interval == "1M":
        first = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        return int(first.timestamp() * 1000), int(after.timestamp() * 1000)
    if interval == "1w":
        monday = (d - dt.timedelta(days=d.weekday())).replace(hour=0, minute=0, second=0)
        open_ = int(monday.replace(microsecond=0).timestamp() * 1000)
        return open_, open_ + 7 * 86_400_000
    unit = {"m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": 1440 * MINUTE_MS}[interval[-1]]
    size = int(interval[:-1]) * unit
    return t - t % size, t - t % size + size


def reference(
    candles: list[Candle], interval: str, since: int | None, until: int | None, limit: int
) -> list[CandleRow]:
    groups: dict[tuple[int, int], list[Candle]] = defaultdict(list)
    for c in sorted(candles, key=lambda c: c.open_time):
        groups[bucket_of(interval, c.open_time)].append(c)
    keys = sorted(
        k for k in groups if (since is None or k[0] >= since) and (until is None or k[0] <= until)
    )
    keys = keys[:limit] if since is not None else keys[-limit:]
    out = []
    with decimal.localcontext(decimal.Context(prec=80)):
        for open_, end in keys:
            g = groups[open_, end]
            trades = [c.trades for c in g if c.trades is not None]
            out.append(CandleRow(
                open_, float(g[0].open), float(max(decimal.Decimal(c.high) for c in g)),
                float(min(decimal.Decimal(c.low) for c in g)), float(g[-1].close),
                float(sum(decimal.Decimal(c.volume) for c in g)),
                float(sum(decimal.Decimal(c.quote_volume) for c in g)),
                sum(trades) if trades else None,
                len(g) == (end - open_) // MINUTE_MS and all(c.closed for c in g),
                "rest" if any(c.source is Source.REST for c in g) else "ws",
            ))  # fmt: skip
    return out


def plain(mantissa: int, decimals: int) -> str:
    if decimals == 0:
        return str(mantissa)
    digits = str(mantissa).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"


# Mostly small values with trimmed decimals (the SQL path); sometimes mantissas near the
# codec's 59-bit limit, whose scaled sums leave 64 bits (the Python path).
values = st.builds(
    plain,
    st.one_of(st.integers(0, 10**7), st.integers(0, 2**59 - 1)),
    st.integers(0, 15) | st.integers(0, 3),
)
minute_rows = st.builds(
    lambda t, o, h, lo, c, v, q, n, closed, rest: one(
        BASE + t * MINUTE_MS, open=o, high=h, low=lo, close=c, volume=v, quote_volume=q,
        trades=n, closed=closed, source=Source.REST if rest else Source.WS,
    ),
    st.integers(-90, 600), values, values, values, values, values, values,
    st.none() | st.integers(0, 10**6), st.booleans() | st.just(True), st.booleans(),
)  # fmt: skip
moments = st.none() | st.integers(-200 * MINUTE_MS, 800 * MINUTE_MS).map(lambda d: BASE + d)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(minute_rows, max_size=150, unique_by=lambda c: c.open_time),
    st.sampled_from(INTERVALS),
    moments,
    moments,
    st.integers(1, 40),
    st.sampled_from([1, 3, 64]),
)
def test_agrees_with_a_decimal_reference(
    candles: list[Candle],
    interval: str,
    since: int | None,
    until: int | None,
    limit: int,
    sample: int,
) -> None:
    # The sample only guesses the scales: a small one makes the second try (wider scales) run.
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(resample_module, "_SAMPLE_ROWS", sample),
    ):
        path = Path(tmp) / "db"
        store(path, candles)
        got = resample(path, interval, since, until, limit)
    assert got == reference(candles, interval, since, until, limit)


@pytest.mark.parametrize("interval", INTERVALS)
def test_ranges_without_rows_read_empty(tmp_path: Path, interval: str) -> None:
    store(tmp_path / "db", [one(BASE), msgspec.structs.replace(one(BASE), symbol="ETHUSDT")])
    assert resample(tmp_path / "db", interval, since=BASE + 40 * 86_400_000) == []
    assert resample(tmp_path / "db", interval, until=BASE - 40 * 86_400_000) == []
    assert len(resample(tmp_path / "db", interval)) == 1
