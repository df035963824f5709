"""The journals of live rows (``feedd/store/journal.py``) against a model of the upsert rule.

The journals are made tiny, so that writes swap and drain them all the time; whatever the
writes, prunes, reopenings and other writers, the view ``candles`` must hold each key once,
with what the upsert rule says, and the coverage runs must match the closed rows.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedd.candle import Candle, Source
from feedd.store import codec, coverage, journal
from feedd.store.database import Database
from feedd.store.schema import JOURNALS, NO_HIDE, SCHEMA_VERSION

T0 = 1_700_000_040_000  # a minute boundary
MINUTE = 60_000
SYMBOLS = ("AUSDT", "BUSDT", "CUSDT")

#: (symbol, minute) -> (close, closed, flags) as the model stores it
Model = dict[tuple[str, int], tuple[str, bool, int]]


def make(symbol: str, minute: int, close: str, closed: bool, source: Source) -> Candle:
    return Candle("binance_futures", symbol, "1m", T0 + minute * MINUTE, "1", "2", "0.5", close,
                  "3", "4", 5, closed, source)  # fmt: skip


def apply(model: Model, c: Candle) -> None:
    """The upsert rule: a closed row yields only to a closed one."""
    key = (c.symbol, (c.open_time - T0) // MINUTE)
    old = model.get(key)
    if old is not None and old[1] and not c.closed:
        return
    flags = int(c.closed) | {Source.WS: 0, Source.REST: 2, Source.ARCHIVE: 4}[c.source]
    model[key] = (c.close, c.closed, flags)


def fetch(path: Path, sql: str) -> list[Any]:
    """Rows of one query on the file, through a connection of its own."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def stored(path: Path) -> list[tuple[str, int, str, bool, int]]:
    found = fetch(
        path,
        "SELECT symbol, open_time, close, flags FROM candles"
        " JOIN series ON series.id = candles.series ORDER BY symbol, open_time",
    )
    return [(s, (t - T0) // MINUTE, codec.decode_str(c), bool(f & 1), f) for s, t, c, f in found]


def runs(path: Path) -> dict[str, list[tuple[int, int]]]:
    found = fetch(
        path,
        "SELECT symbol, start, end FROM runs JOIN series ON series.id = runs.series"
        " ORDER BY symbol, end",
    )
    out: dict[str, list[tuple[int, int]]] = {}
    for symbol, start, end in found:
        out.setdefault(symbol, []).append(((start - T0) // MINUTE, (end - T0) // MINUTE))
    return out


def check(path: Path, model: Model) -> None:
    rows = stored(path)
    keys = [(s, m) for s, m, *_ in rows]
    assert len(keys) == len(set(keys)), "a key is in two places"
    assert {(s, m): (c, closed, f) for s, m, c, closed, f in rows} == model
    expected: dict[str, list[tuple[int, int]]] = {}
    for symbol in SYMBOLS:
        closed = [T0 + m * MINUTE for (s, m), v in model.items() if s == symbol and v[1]]
        if closed:
            expected[symbol] = [
                ((a - T0) // MINUTE, (b - T0) // MINUTE) for a, b in coverage.segments("1m", closed)
            ]
    assert runs(path) == expected


@contextmanager
def tiny_journals(rows: int) -> Iterator[None]:
    saved = journal.JOURNAL_ROWS
    journal.JOURNAL_ROWS = rows
    try:
        yield
    finally:
        journal.JOURNAL_ROWS = saved


candles = st.builds(
    lambda symbol, minute, closed, source: (symbol, minute, closed, source),
    st.sampled_from(SYMBOLS),
    st.integers(0, 40),
    st.booleans(),
    st.sampled_from([Source.WS, Source.WS, Source.WS, Source.REST, Source.ARCHIVE]),
)
operations = st.one_of(
    st.tuples(st.just("write"), st.lists(candles, min_size=1, max_size=12)),
    st.tuples(st.just("live"), st.integers(1, 6)),  # every series' next minutes, as a feed
    st.tuples(st.just("prune"), st.integers(1, 30)),
    st.tuples(st.just("reopen"), st.booleans()),
    st.tuples(st.just("other"), st.lists(candles, min_size=1, max_size=4)),
    st.tuples(st.just("upkeep"), st.none()),  # as the writer runs it between commits
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(operations, min_size=1, max_size=25),
    journal_rows=st.sampled_from([3, 4, 6, 10]),
)
def test_the_view_holds_what_the_upsert_rule_says(
    ops: list[tuple[str, object]], journal_rows: int
) -> None:
    model: Model = {}
    serial = 0
    newest = dict.fromkeys(SYMBOLS, 0)

    def batch(spec: object) -> list[Candle]:
        nonlocal serial
        out = []
        for symbol, minute, closed, source in spec:  # type: ignore[attr-defined]
            serial += 1
            out.append(make(symbol, minute, f"{serial}.5", closed, source))
        return out

    with tiny_journals(journal_rows), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.db"
        db = Database.open(path)
        try:
            for op, arg in ops:
                if op == "write":
                    written = batch(arg)
                    db.write(written)
                    for c in written:
                        apply(model, c)
                elif op == "live":
                    live = []
                    for _ in range(int(arg)):  # type: ignore[call-overload]
                        for symbol in SYMBOLS:
                            serial += 1
                            minute = newest[symbol]
                            live.append(make(symbol, minute, f"{serial}.5", False, Source.WS))
                            live.append(make(symbol, minute, f"{serial}.7", True, Source.WS))
                            newest[symbol] = minute + 1
                    db.write(live)
                    for c in live:
                        apply(model, c)
                elif op == "other":
                    written = batch(arg)
                    other = Database.open(path)
                    try:
                        other.write(written)
                    finally:
                        other.close(checkpoint=False)
                    for c in written:
                        apply(model, c)
                elif op == "prune":
                    keep = int(arg)  # type: ignore[call-overload]
                    db.prune(keep)
                    after = {(s, m) for s, m, *_ in stored(path)}
                    for symbol in SYMBOLS:
                        minutes = sorted(m for s, m in model if s == symbol)
                        left = sorted(m for s, m in after if s == symbol)
                        # Retention may leave a series for a later round, never cuts into
                        # its newest ``keep`` and deletes from the oldest end only.
                        assert left == minutes[len(minutes) - len(left) :]
                        assert len(left) >= min(keep, len(minutes))
                    model = {k: v for k, v in model.items() if k in after}
                elif op == "upkeep":
                    db.upkeep()
                else:
                    db.close(checkpoint=bool(arg))
                    db = Database.open(path)
                check(path, model)
        finally:
            db.close()


def test_live_rows_go_to_the_journal_and_move_whole(tmp_path: Path) -> None:
    """A feed's rows are appended to the active journal; past JOURNAL_ROWS it becomes the
    draining one, which the next write moves into ``candle_rows`` whole and clears."""
    path = tmp_path / "j.db"
    model: Model = {}
    with tiny_journals(12):
        db = Database.open(path)
        try:
            for minute in range(10):
                live = [make(s, minute, f"{minute}.5", True, Source.WS) for s in SYMBOLS]
                db.write(live)
                for c in live:
                    apply(model, c)
                check(path, model)
            counts = {t: fetch(path, f"SELECT count(*) FROM {t}")[0][0]
                      for t in ("candle_rows", *JOURNALS)}  # fmt: skip
        finally:
            db.close()
    # 30 rows, 3 a write: the 4th and 8th writes filled a journal (12 rows), the 5th and 9th
    # moved each whole; the last two writes' 6 rows are journalled. None is anywhere twice
    # (check above).
    assert counts["candle_rows"] == 24
    assert counts["journal0"] + counts["journal1"] == 6


def test_a_journal_left_half_moved_reads_right_and_moves_the_rest(tmp_path: Path) -> None:
    """feedd once moved a draining journal in slices over several commits, marking the open
    times moved in ``journal_state``; a file it left so shows each row once and the next
    upkeep moves only what had not moved, then clears the journal."""
    path = tmp_path / "j.db"
    model: Model = {}
    with tiny_journals(6):
        db = Database.open(path)
        try:
            for minute in (0, 1):  # 6 rows: the second write swaps the journals
                live = [make(s, minute, f"{minute}.5", True, Source.WS) for s in SYMBOLS]
                db.write(live)
                for c in live:
                    apply(model, c)
            assert db.upkeep_due
            (active,) = fetch(path, "SELECT active FROM journal_state")[0]
            draining = JOURNALS[1 - active]
            # What a slice of the earlier feedd did: minute 0 copied, then hidden.
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT INTO candle_rows SELECT * FROM {draining} WHERE open_time <= ?", (T0,)
                )
                conn.execute(f"UPDATE journal_state SET hide{1 - active} = ?", (T0,))
                conn.execute("COMMIT")
            check(path, model)  # minute 0 is in two tables, shown once
            assert fetch(path, "SELECT count(*) FROM candle_rows")[0][0] == 3
            db.upkeep()
            check(path, model)
            assert journalled(path) == []
            assert fetch(path, "SELECT count(*) FROM candle_rows")[0][0] == 6
            assert fetch(path, "SELECT hide0, hide1 FROM journal_state") == [(NO_HIDE, NO_HIDE)]
            assert not db.upkeep_due
        finally:
            db.close()


def test_upkeep_moves_a_full_journal_so_that_writes_need_not(tmp_path: Path) -> None:
    """What a write would move at its end, ``upkeep`` moves between writes: after it, the next
    write moves nothing and the rows are where the upsert rule says."""
    path = tmp_path / "j.db"
    model: Model = {}
    moves_in_writes = 0
    with tiny_journals(6):
        db = Database.open(path)
        try:
            for minute in range(12):
                assert not db.upkeep_due
                before = fetch(path, "SELECT count(*) FROM candle_rows")[0][0]
                live = [make(s, minute, f"{minute}.5", True, Source.WS) for s in SYMBOLS]
                db.write(live)
                moves_in_writes += fetch(path, "SELECT count(*) FROM candle_rows")[0][0] != before
                for c in live:
                    apply(model, c)
                if minute % 2 == 1:  # 6 rows: the active journal is full, swapped by the write
                    assert db.upkeep_due
                    db.upkeep()
                check(path, model)
            moved = fetch(path, "SELECT count(*) FROM candle_rows")[0][0]
            left = journalled(path)
        finally:
            db.close(checkpoint=False)
    assert moves_in_writes == 0
    assert (moved, left) == (36, [])  # six full journals, each moved by its upkeep


def test_history_goes_straight_to_the_table(tmp_path: Path) -> None:
    """REST rows and rows older than a series' stored ones never enter a journal: a year of
    history must not be copied twice."""
    path = tmp_path / "j.db"
    db = Database.open(path)
    try:
        db.write([make("AUSDT", m, "1", True, Source.REST) for m in range(50)])
        db.write([make("AUSDT", 100, "2", False, Source.WS)])  # the live minute
        db.write([make("AUSDT", m, "3", True, Source.WS) for m in range(50, 60)])  # older
        assert journalled(path) == [T0 + 100 * MINUTE]
        before = stored(path)
    finally:
        db.close()
    # A clean close moves the journals' rows into the table.
    assert journalled(path) == []
    assert stored(path) == before


def journalled(path: Path) -> list[int]:
    sql = "SELECT open_time FROM journal0 UNION ALL SELECT open_time FROM journal1"
    return [t for (t,) in fetch(path, sql)]


V2_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE series (id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
    interval TEXT NOT NULL, UNIQUE (exchange, symbol, interval));
CREATE TABLE candles (series INTEGER NOT NULL, open_time INTEGER NOT NULL,
    open INTEGER NOT NULL, high INTEGER NOT NULL, low INTEGER NOT NULL, close INTEGER NOT NULL,
    volume INTEGER NOT NULL, quote_volume INTEGER NOT NULL, trades INTEGER,
    flags INTEGER NOT NULL, PRIMARY KEY (series, open_time)) WITHOUT ROWID;
CREATE TABLE jobs (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, doc TEXT NOT NULL)
    WITHOUT ROWID;
CREATE VIEW ohlcv AS SELECT series.symbol, candles.open_time, candles.close, 'archive' AS x
    FROM candles JOIN series ON series.id = candles.series;
CREATE TABLE runs (series INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    PRIMARY KEY (series, end)) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', 2);
INSERT INTO series VALUES (1, 'binance_futures', 'AUSDT', '1m');
"""


def test_a_schema_2_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V2_DDL)
    conn.executemany(
        "INSERT INTO candles VALUES (1, ?, 1, 2, 3, ?, 5, 6, 7, 1)",
        [(T0 + m * MINUTE, codec.encode(f"{m}.5")) for m in range(5)],
    )
    conn.execute("INSERT INTO runs VALUES (1, ?, ?)", (T0, T0 + 4 * MINUTE))
    conn.commit()
    conn.close()
    db = Database.open(path)
    try:
        db.write([make("AUSDT", 5, "5.5", True, Source.WS)])
    finally:
        db.close()
    assert [(m, c) for _, m, c, *_ in stored(path)] == [(m, f"{m}.5") for m in range(6)]
    assert runs(path) == {"AUSDT": [(0, 5)]}
    version = fetch(path, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == [(SCHEMA_VERSION,)]
    kinds = dict(fetch(path, "SELECT name, type FROM sqlite_master"))
    assert kinds["candles"] == "view" and kinds["candle_rows"] == "table"
    # ``ohlcv`` was made anew over the view: it sees the journalled row too.
    assert fetch(path, "SELECT count(*), max(close) FROM ohlcv") == [(6, 5.5)]


@pytest.mark.parametrize("keep", [2, 100])
def test_prune_reaches_into_the_journals(tmp_path: Path, keep: int) -> None:
    """A series kept shorter than what the journals hold of it loses journalled rows too."""
    path = tmp_path / "j.db"
    with tiny_journals(1000):
        db = Database.open(path)
        try:
            for minute in range(250):
                db.write([make("AUSDT", minute, "1", True, Source.WS)])
            db.prune(keep)
            left = [m for _, m, *_ in stored(path)]
        finally:
            db.close()
    assert left == list(range(250 - keep, 250))
