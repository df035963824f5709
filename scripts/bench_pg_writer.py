"""Sustained Writer commits into PostgreSQL against SQLite, same machine, same run.

The Writer end to end (lists of candles on its channel -> collector -> writer thread ->
commit), fed as live collection feeds it: every minute of ``--series`` series, one list per
series, as fast as the store takes them. Runs alternate SQLite, PostgreSQL, SQLite, ... (a
shared machine's speed drifts) and the summary gives PostgreSQL's candles/s as a ratio of the
SQLite run next to it (median over the pairs). ``--chunk 600`` sends a minute of 600 series
as one list, which takes the channel out of the way: then the commits set the pace. Also each
backend's raw write() rate in batches of ``--batch``, and two collectors writing the same
candles into one PostgreSQL database at once.

PostgreSQL is a server of its own started by tests/pgserver.py in a temporary folder (initdb,
loopback, as the postgres system user under root), durable like SQLite's WAL with
synchronous=NORMAL: fsync on, synchronous_commit off (a crash loses the last commits, never
corrupts). ``--synchronous-commit on`` waits for the WAL flush at every commit instead.

    .venv/bin/python scripts/bench_pg_writer.py [--series 600] [--minutes 100] [--pairs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_store import realistic
from pgserver import PgServer

from feedd.candle import Candle
from feedd.store.backend import Backend
from feedd.store.postgres import postgres_backend
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings


async def writer_rate(backend: Backend, candles: list[Candle], chunk: int) -> dict[str, float]:
    """Candles/s through the Writer, sent in lists of ``chunk``."""
    writer = Writer(WriterSettings(backend=backend, batch_interval_ms=50, max_records=10**9))
    send, recv = trio.open_memory_channel[Sequence[Candle]](64)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        async with send:
            for i in range(0, len(candles), chunk):
                await send.send(candles[i : i + chunk])
    elapsed = time.perf_counter() - start
    s = writer.stats
    assert s.committed >= len(candles) and s.dropped == 0 and s.retries == 0, s
    return {
        "rate": len(candles) / elapsed,
        "batches": s.batches,
        "p50": s.latency_p50_ms or 0.0,
        "p99": s.latency_p99_ms or 0.0,
    }


async def two_collectors(backends: Sequence[Backend], candles: list[Candle], chunk: int) -> float:
    """Two Writers (two collectors) taking the same candles into one database at once:
    candles/s each, both done."""
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for backend in backends:
            nursery.start_soon(writer_rate, backend, candles, chunk)
    return len(candles) / (time.perf_counter() - start)


def write_rate(backend: Backend, candles: list[Candle], batch: int) -> float:
    db = backend.open_writer(busy_timeout_ms=5000)
    start = time.perf_counter()
    for i in range(0, len(candles), batch):
        db.write(candles[i : i + batch])
    elapsed = time.perf_counter() - start
    db.close()
    return len(candles) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=600)
    parser.add_argument("--minutes", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--chunk", type=int, default=1, help="candles per list sent to the Writer (1: as live)"
    )
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="off")
    args = parser.parse_args()
    candles = realistic(args.series, args.minutes)
    print(f"{len(candles):,} candles: {args.series} series x {args.minutes} minutes")
    server = PgServer(
        {"fsync": "on", "full_page_writes": "on", "synchronous_commit": args.synchronous_commit}
    )
    server.start()
    print(f"PostgreSQL: {server.bin}, synchronous_commit={args.synchronous_commit}")
    ratios = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for pair in range(args.pairs):
                sqlite = SqliteBackend(Path(tmp) / f"w{pair}.db")
                pg = postgres_backend(server.dsn(server.create_database()))
                results = {}
                for name, backend in (("sqlite", sqlite), ("postgresql", pg)):
                    backend.prepare()
                    results[name] = trio.run(writer_rate, backend, candles, args.chunk)
                    r = results[name]
                    print(f"pair {pair + 1} {name:>10}: Writer {r['rate']:>9,.0f} candles/s,"
                          f" {r['batches']:.0f} batches, commit p50 {r['p50']:.1f} ms"
                          f" p99 {r['p99']:.1f} ms")  # fmt: skip
                ratios.append(results["postgresql"]["rate"] / results["sqlite"]["rate"])
            dsn = server.dsn(server.create_database())
            pair_rate = trio.run(
                two_collectors, [postgres_backend(dsn) for _ in range(2)], candles, args.chunk
            )
            print(f"two collectors, same candles, one database: {pair_rate:,.0f} candles/s each")
            for name, backend in (
                ("sqlite", SqliteBackend(Path(tmp) / "raw.db")),
                ("postgresql", postgres_backend(server.dsn(server.create_database()))),
            ):
                backend.prepare()
                rate = write_rate(backend, candles, args.batch)
                print(f"{name:>10}: write() in batches of {args.batch}: {rate:,.0f} rows/s")
    finally:
        server.destroy()
    print(f"PostgreSQL / SQLite, Writer end to end: median {statistics.median(ratios):.2f}"
          f" (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
