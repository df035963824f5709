"""What a time-major journal for live rows would save the SQLite writer: a design measurement.

feedd's writer upserts each batch straight into ``candles``, whose key is (series, open time):
every row of a batch lands on its own series' newest page, so a commit of 100 rows over 600
series dirties ~100 pages of 4 KiB and writes them all to the WAL (at 2,000 updates/s the
writer thread spends ~21 µs per row). The alternative measured here is not feedd's code path:

- **direct**: ``Database.write`` as the writer calls it (rows, key-ordered upsert, coverage
  runs, commit);
- **journal**: the same rows appended to an unindexed rowid table (each commit fills pages
  at the table's end), and every ``--compact`` rows one transaction moves them into
  ``candles`` in key order (the same upsert rule, duplicates in arrival order), keeps the
  coverage runs, and empties the journal.

Both run in one process on one database (600 series, ``--warm`` rows stored first), rounds
alternating, CPU time per row. Readers are not measured: a journal also needs them to see
its rows (see the README's Performance section).

    python scripts/bench_journal.py                       # 100- and 2,500-row commits
    python scripts/bench_journal.py --batch 100 --compact 5000
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import tempfile
import time
from pathlib import Path

from bench_hotpath import frames

from feedd.candle import Candle
from feedd.exchanges import binance
from feedd.store import database
from feedd.store.database import Database, Row

SERIES = 600
_JOURNAL = """
CREATE TABLE journal (series INTEGER NOT NULL, open_time INTEGER NOT NULL, open INTEGER NOT NULL,
    high INTEGER NOT NULL, low INTEGER NOT NULL, close INTEGER NOT NULL, volume INTEGER NOT NULL,
    quote_volume INTEGER NOT NULL, trades INTEGER, flags INTEGER NOT NULL)
"""
_APPEND = "INSERT INTO journal VALUES "
#: "WHERE true" keeps SQLite from reading ON CONFLICT as a join's ON
_COMPACT = (
    "INSERT INTO candles SELECT series, open_time, open, high, low, close, volume, quote_volume,"
    " trades, flags FROM journal WHERE true ORDER BY series, open_time, rowid"
    + database._ON_CONFLICT
)


class Journal:
    def __init__(self, db: Database, compact_every: int) -> None:
        self.db = db
        self.conn: sqlite3.Connection = db._conn
        self.conn.execute(_JOURNAL)
        self.compact_every = compact_every
        self.held: list[Row] = []
        self.compact_s = 0.0

    def write(self, candles: list[Candle]) -> None:
        n = database.ROWS_PER_STATEMENT
        self.conn.execute("BEGIN IMMEDIATE")
        rows = self.db._rows(candles, {})
        whole = len(rows) - len(rows) % n
        flat = itertools.chain.from_iterable
        if whole:
            sql = _APPEND + ", ".join([database._ROW] * n)
            self.conn.executemany(sql, [tuple(flat(rows[i : i + n])) for i in range(0, whole, n)])
        if whole < len(rows):
            self.conn.executemany(_APPEND + database._ROW, rows[whole:])
        self.conn.execute("COMMIT")
        self.held += rows
        if len(self.held) >= self.compact_every:
            self.compact()

    def compact(self) -> None:
        start = time.process_time()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(_COMPACT)
        self.db._record_closed(sorted(self.held, key=database._KEY))
        self.conn.execute("DELETE FROM journal")
        self.conn.execute("COMMIT")
        self.held = []
        self.compact_s += time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="rows per commit (repeatable)")
    parser.add_argument("--compact", type=int, default=20_000, help="journal rows per compaction")
    parser.add_argument("--warm", type=int, default=300_000, help="rows stored before measuring")
    parser.add_argument("--rows", type=int, default=60_000, help="rows per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batches = args.batch or [100, 2500]
    total = args.warm + args.rows * 2 * args.rounds * len(batches)
    candles = [
        c for text in frames(SERIES, total) for c in binance.parse_frame(text)
        if isinstance(c, Candle)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        db = Database.open(Path(folder) / "bench.db")
        for i in range(0, args.warm, 5000):
            db.write(candles[i : i + 5000])
        db.checkpoint()
        journal = Journal(db, args.compact)
        pos = args.warm
        for batch in batches:
            figures: dict[str, list[str]] = {"direct": [], "journal": []}
            for _ in range(args.rounds):
                for mode in figures:
                    part = candles[pos : pos + args.rows]
                    pos += args.rows
                    journal.compact_s = 0.0
                    start = time.process_time()
                    for i in range(0, len(part), batch):
                        (db.write if mode == "direct" else journal.write)(part[i : i + batch])
                    if mode == "journal":
                        journal.compact()  # what is left: every row counted is in candles
                    per_row = (time.process_time() - start) / len(part) * 1e6
                    compact = journal.compact_s / len(part) * 1e6
                    figures[mode].append(
                        f"{per_row:.1f}" + (f" ({compact:.1f} compacting)" if compact else "")
                    )
            stored = db._conn.execute("SELECT count(*) FROM candles").fetchone()[0]
            assert stored == pos, (stored, pos)  # every candle is a new key: all are stored
            print(f"{batch}-row commits, µs of CPU per row:")
            for mode, values in figures.items():
                print(f"  {mode:8s} {', '.join(values)}")
        db.close()


if __name__ == "__main__":
    main()
