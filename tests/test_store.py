"""Codec round trips and the synchronous Database: upsert rules, retention, wipe, errors."""

from __future__ import annotations

import os
import random
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.store import codec, database
from feedd.store.database import Database
from feedd.store.schema import SCHEMA_VERSION, WAL_AUTOCHECKPOINT_PAGES

T0 = 1_700_000_040_000  # a minute boundary


def candle(
    t: int = T0, close: str = "100.5", *, closed: bool = True, source: Source = Source.WS,
    symbol: str = "BTCUSDT", interval: str = "1m", volume: str = "1.000",
) -> Candle:  # fmt: skip
    return Candle("binance_futures", symbol, interval, t, "100.0", "101.25", "99.5", close,
                  volume, "12413747.23840", 42, closed, source)  # fmt: skip


def rows(db_path: Path, symbol: str = "BTCUSDT") -> list[tuple[int, str, int]]:
    """(open_time, close as exact text, flags) of a series, oldest first."""
    conn = sqlite3.connect(db_path)
    try:
        found = conn.execute(
            "SELECT open_time, close, flags FROM candles JOIN series ON series.id = series"
            " WHERE symbol = ? ORDER BY open_time",
            (symbol,),
        ).fetchall()
    finally:
        conn.close()
    return [(t, codec.decode_str(c), f) for t, c, f in found]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.open(tmp_path / "t.db")


# --- codec ---------------------------------------------------------------------------------

EXACT = ["0", "0.0", "0.00000001", "94172.40", "131.776", "12413747.23840", "5.00", "100",
         "123456789012.12345", "0.000000000000001", "576460752303423487"]  # fmt: skip


@pytest.mark.parametrize("text", EXACT)
def test_codec_round_trips_exactly(text: str) -> None:
    x = codec.encode(text)
    assert codec.decode_str(x) == text
    assert codec.decode_float(x) == float(text)
    assert codec.decode_decimal(x) == Decimal(text)
    assert -(2**63) <= x < 2**63


def test_codec_typical_price_fits_four_bytes() -> None:
    assert codec.encode("94172.40") < 2**31


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("1.1000000000000000000", "1.1"),  # >15 decimals: trailing zeros go first
        ("0.1234567890123456789", "0.123456789012346"),
        ("0.0000000000000025", "0.000000000000002"),  # half-even: tie to even
        ("0.0000000000000035", "0.000000000000004"),
        ("0.00000000000000000001", "0.000000000000000"),
        ("12345678901234567.123", "12345678901234567.1"),  # mantissa must fit 59 bits
    ],
)
def test_codec_rounds_beyond_fifteen_decimals(text: str, stored: str) -> None:
    assert codec.decode_str(codec.encode(text)) == stored


@pytest.mark.parametrize("bad", ["", "abc", "1e5", "nan", "inf", " 1", "1_0", "-", ".", "1.2.3"])
def test_codec_rejects_non_decimals(bad: str) -> None:
    with pytest.raises(ValueError):
        codec.encode(bad)


def test_codec_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        codec.encode("9" * 30)


_PRICE_POOL = ["94172.40", "94172.4", "94180.10", "94100.00", "0.00001234", "7", "007", "",
               "1.2.3", "9" * 30]  # fmt: skip


@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.sampled_from(_PRICE_POOL),
                                                       min_size=4, max_size=4)),
                max_size=60))  # fmt: skip
def test_encode_prices_is_encode_with_repeats_reused(
    updates: list[tuple[int, list[str]]],
) -> None:
    """Series updates drawn from a small pool (so strings repeat in every position, close
    equals high or low, and refused strings come and go): always ``encode`` of each, or its
    ValueError, and a refused update changes nothing remembered."""
    last: dict[int, codec.LastPrices] = {}
    for series, prices in updates:
        try:
            expected = tuple(codec.encode(p) for p in prices)
        except ValueError:
            before = dict(last)
            with pytest.raises(ValueError):
                codec.encode_prices(last, series, *prices)
            assert last == before
            continue
        assert codec.encode_prices(last, series, *prices) == expected
        assert last[series] == tuple(x for pair in zip(prices, expected, strict=True) for x in pair)


@given(st.integers(0, 10**17), st.integers(0, 15))
def test_codec_property_round_trip(mantissa: int, decimals: int) -> None:
    digits = str(mantissa).rjust(decimals + 1, "0")
    text = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    x = codec.encode(text)
    assert codec.decode_str(x) == text
    assert codec.decode_float(x) == float(text)  # float(str) is correctly rounded too


# Below 576 a 15-decimal mantissa fits 59 bits; above, decimals give way (tested apart).
@given(st.decimals(min_value=0, max_value=500, places=20, allow_nan=False))
def test_codec_property_long_decimals_round_half_even(value: Decimal) -> None:
    text = f"{value:f}"
    expected = value.quantize(Decimal(1).scaleb(-15), rounding="ROUND_HALF_EVEN")
    assert codec.decode_decimal(codec.encode(text)) == expected


@pytest.mark.parametrize("math", [True, False])
def test_sql_decode_matches_python(math: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "has_math_functions", lambda: math)
    values = [codec.encode(t) for t in [*EXACT, "0.3", "1.7", "99999.99", "0.123456789012345"]]
    conn = sqlite3.connect(":memory:")
    sql = f"SELECT {codec.sql_decode('x')} FROM (SELECT ? AS x)"
    got = [conn.execute(sql, (x,)).fetchone()[0] for x in values]
    conn.close()
    assert got == [codec.decode_float(x) for x in values]


# --- schema and upserts --------------------------------------------------------------------


def test_schema_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t.db"
    Database.open(path).close()
    db = Database.open(path)
    db.write([candle()])
    db.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall() == [
        (SCHEMA_VERSION,)
    ]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    assert rows(path) == [(T0, "100.5", 1)]


def test_forming_never_overwrites_closed(db: Database) -> None:
    assert db.write([candle(close="100.50", closed=True)]) == 1
    assert db.write([candle(close="200.00", closed=False)]) == 0
    assert rows(db.path) == [(T0, "100.50", 1)]


def test_closed_overwrites_closed_and_keeps_source(db: Database) -> None:
    db.write([candle(close="100.50")])
    assert db.write([candle(close="100.60", source=Source.REST)]) == 1
    assert rows(db.path) == [(T0, "100.60", 1 | 2)]


def test_forming_then_newer_forming_then_closed(db: Database) -> None:
    db.write([candle(close="1.0", closed=False)])
    db.write([candle(close="2.0", closed=False)])
    assert rows(db.path) == [(T0, "2.0", 0)]
    db.write([candle(close="3.0", closed=True)])
    assert rows(db.path) == [(T0, "3.0", 1)]


def test_one_batch_applies_in_order(db: Database) -> None:
    batch = [candle(close="1", closed=False), candle(close="2"), candle(close="3", closed=False)]
    db.write(batch)
    assert rows(db.path) == [(T0, "2", 1)]


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_of_many_statements_applies_in_order(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows go ROWS_PER_STATEMENT to a statement: updates of one candle, within a statement
    and across two, land as they would one statement per row (the written count too)."""
    rng = random.Random(seed)
    times = [T0 + i * 60_000 for i in range(40)]
    batch = [
        candle(rng.choice(times), close=str(n), closed=rng.random() < 0.5,
               symbol=rng.choice(("BTCUSDT", "ETHUSDT")))
        for n in range(database.ROWS_PER_STATEMENT * 3 + 17)
    ]  # fmt: skip
    many = Database.open(tmp_path / "many.db")
    one = Database.open(tmp_path / "one.db")
    try:
        counts = [many.write(batch), many.write(batch[::-1])]
        monkeypatch.setattr(database, "ROWS_PER_STATEMENT", len(batch) * 2)  # one row each
        assert [one.write(batch), one.write(batch[::-1])] == counts
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert rows(many.path, symbol) == rows(one.path, symbol)
            assert len(rows(many.path, symbol)) > 10
    finally:
        many.close()
        one.close()


def test_codec_rejects_drop_only_the_bad_candle(db: Database) -> None:
    db.write([candle(T0, close="1e5"), candle(T0 + 60_000, close="7")])
    assert db.rejected == 1
    assert rows(db.path) == [(T0 + 60_000, "7", 1)]


def test_locked_database_raises_store_error_and_recovers(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db", busy_timeout_ms=10)
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="locked"):
        db.write([candle(symbol="NEWUSDT")])
    other.execute("ROLLBACK")
    other.close()
    # The series id minted in the rolled-back transaction must not have been cached.
    db.write([candle(symbol="NEWUSDT"), candle(symbol="ETHUSDT")])
    assert rows(db.path, "NEWUSDT") == [(T0, "100.5", 1)]
    assert rows(db.path, "ETHUSDT") == [(T0, "100.5", 1)]


def test_read_only_database_raises_store_error(db: Database) -> None:
    db._conn.execute("PRAGMA query_only = 1")  # as root, chmod cannot make a file read-only
    with pytest.raises(StoreError, match="read-only"):
        db.write([candle()])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_raises_store_error(tmp_path: Path) -> None:
    Database.open(tmp_path / "t.db").close()
    (tmp_path / "t.db").chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError):
            Database.open(tmp_path / "t.db").write([candle()])
    finally:
        tmp_path.chmod(0o755)


def test_open_fails_with_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        Database.open(tmp_path / "file" / "t.db")


# --- retention, wipe, close -----------------------------------------------------------------


def test_prune_keeps_newest_of_series_written_since_last_prune(db: Database) -> None:
    db.write([candle(T0 + i * 60_000, symbol=s) for s in ("A", "B") for i in range(20)])
    assert db.prune(10) == 20
    assert [t for t, _, _ in rows(db.path, "A")] == [T0 + i * 60_000 for i in range(10, 20)]
    db.write([candle(T0 + 20 * 60_000, symbol="A")])
    db.prune(5)
    assert [t for t, _, _ in rows(db.path, "A")] == [T0 + i * 60_000 for i in range(16, 21)]
    assert len(rows(db.path, "B")) == 10  # not written since: left for its next write


def test_prune_counts_rows_not_time_span(db: Database) -> None:
    # Wide gaps: the span says "many", the rows are few; only real rows count.
    times = [T0 + i * 3_600_000 for i in range(6)]
    db.write([candle(t) for t in times])
    assert db.prune(4) == 2
    assert [t for t, _, _ in rows(db.path)] == times[2:]
    assert db.prune(4) == 0


def test_prune_of_a_series_within_its_limit_reads_only_the_ends(db: Database) -> None:
    """Every series written is checked at every prune (5 s): a check that walks the series
    costs seconds per round once 600 series hold 100,000 candles each."""
    db.write([candle(T0 + i * 60_000) for i in range(20_000)])
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    db._conn.set_progress_handler(count, 100)  # called every 100 SQLite VM instructions
    assert db.prune(100_000) == 0
    # Seeking both ends of the index: a few hundred instructions; walking 20,000 entries
    # (min and max in one SELECT): over 100,000.
    assert steps < 50


def test_wipe_deletes_everything_and_writes_continue(db: Database) -> None:
    db.write([candle(T0 + i * 60_000, symbol=s) for s in ("A", "B") for i in range(5)])
    db.wipe()
    assert rows(db.path, "A") == [] and rows(db.path, "B") == []
    db.write([candle(symbol="A")])
    assert rows(db.path, "A") == [(T0, "100.5", 1)]


def test_checkpoints_wait_for_many_wal_pages(tmp_path: Path) -> None:
    """Commits that each rewrite the newest page of hundreds of series are not checkpointed
    every 1,000 WAL pages (SQLite's default, which copied and fsynced those same pages after
    nearly every commit), only past WAL_AUTOCHECKPOINT_PAGES."""
    db = Database.open(tmp_path / "t.db")
    try:
        symbols = [f"S{i}USDT" for i in range(400)]
        # 100 candles a series: each series' newest rows sit on a page of their own. REST
        # rows: live ones would go to the journal, whose pages fill at its end.
        rest = Source.REST
        db.write([candle(T0 + m * 60_000, symbol=s, source=rest)
                  for s in symbols for m in range(100)])  # fmt: skip
        resets = wal_resets(tmp_path / "t.db-wal")
        for minute in range(100, 108):
            db.write([candle(T0 + minute * 60_000, symbol=s, source=rest) for s in symbols])
        # The WAL restarts after each complete checkpoint: none in ~3,500 pages.
        assert wal_resets(tmp_path / "t.db-wal") == resets
        conn = sqlite3.connect(tmp_path / "t.db")
        try:
            _, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
    finally:
        db.close()
    assert 3000 < wal_pages < WAL_AUTOCHECKPOINT_PAGES


def wal_resets(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: one more at every restart of the log."""
    with wal.open("rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_close_checkpoints_wal(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db")
    db.write([candle(T0 + i * 60_000) for i in range(1000)])
    db.close()
    wal = tmp_path / "t.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_realistic_candles_take_under_60_bytes(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db")
    batch = [
        Candle(
            "bybit_futures",
            f"S{s}USDT",
            "1m",
            T0 + i * 60_000,
            f"{94000 + i % 300}.{i % 10}0",
            f"{94100 + i % 300}.50",
            f"{93900 + i % 300}.10",
            f"{94050 + i % 200}.20",
            f"{(i * 7919) % 100000 / 1000:.3f}",
            f"{(i * 104729) % 10**9 / 100:.2f}",
            i % 4000,
            True,
            Source.WS,
        )
        for i in range(5000)
        for s in range(4)
    ]
    for k in range(0, len(batch), 5000):
        db.write(batch[k : k + 5000])
    db.close()
    # Pages in use: the journals' emptied pages are free for the next rows (a bounded few).
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    assert (pages - free) * size / len(batch) < 60
