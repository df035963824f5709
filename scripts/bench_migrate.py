"""Benchmark ``feedd migrate``: candles/s copied from a SQLite store into SQLite and into
PostgreSQL, and the time to verify them (count + checksum of every series on both sides).

Usage: .venv/bin/python scripts/bench_migrate.py [--series 20] [--minutes 20000]
    [--dsn postgresql://...]   (default: a throwaway server from tests/pgserver.py, when this
    machine has PostgreSQL's binaries; --no-postgres to skip it)
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_store import realistic

from feedd import migrate
from feedd.storageconfig import StorageConfig
from feedd.store.database import Database


def make_source(path: Path, series: int, minutes: int) -> int:
    db = Database.open(path)
    candles = realistic(series, minutes)
    for k in range(0, len(candles), 50_000):
        db.write(candles[k : k + 50_000])
    db.close()
    return len(candles)


def run(source: Path, target: StorageConfig, batch: int) -> migrate.Summary:
    err = io.StringIO()  # the progress bar: not part of the figures
    return trio.run(migrate.migrate, StorageConfig(path=str(source)), target, batch, err)


def report(name: str, summary: migrate.Summary) -> None:
    assert not summary.mismatches, summary.mismatches
    print(
        f"{name:<22} {summary.rows_copied:>9,} candles  copy {summary.copy_seconds:6.2f} s"
        f" = {summary.rows_per_s:>8,.0f} candles/s   verify {summary.verify_seconds:6.2f} s"
        f" = {summary.rows_total / max(summary.verify_seconds, 1e-9):>8,.0f} candles/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=migrate.BATCH_ROWS)
    parser.add_argument("--dsn", help="an empty PostgreSQL database to fill")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "source.db"
        t = time.perf_counter()
        rows = make_source(source, args.series, args.minutes)
        print(f"source: {rows:,} candles in {args.series} series ({time.perf_counter() - t:.1f} s)")
        copy = StorageConfig(path=str(folder / "copy.db"))
        report("sqlite -> sqlite", run(source, copy, args.batch))
        if args.no_postgres:
            return
        dsn = args.dsn
        if dsn is None:
            import pgserver

            if pgserver.problem() is not None:
                print(f"postgresql: skipped ({pgserver.problem()})")
                return
            server = pgserver.shared_server()
            dsn = server.dsn(server.create_database())
        target = StorageConfig(backend="postgresql", dsn=dsn)
        report("sqlite -> postgresql", run(source, target, args.batch))
        report("  again (resumed)", run(source, target, args.batch))


if __name__ == "__main__":
    main()
