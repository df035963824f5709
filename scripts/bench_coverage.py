"""Benchmark ``GET /coverage`` over many series: 600 series of 100,000 1m candles each, every
series with a few holes, through the real HTTP API.

The candles are generated inside SQLite (a recursive CTE: fast), the runs are built the way
an upgraded version-1 database gets them (``coverage.rebuild``, timed too), then feedd starts
with every exchange disabled and serves ``/coverage``. The reference, measured in the same
run: the same holes found by one SQL scan of the candles (a window function), which is what
``/coverage`` would cost without the runs.

Usage: .venv/bin/python scripts/bench_coverage.py [--series 600] [--candles 100000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio
from bench_api import serving

from feedd.store import coverage
from feedd.store.schema import connect_writer

T0 = 1_600_000_020_000 // 60_000 * 60_000
HOLES_PER_SERIES = 5


def fill(path: Path, series: int, candles: int) -> None:
    conn = connect_writer(path)
    conn.execute("BEGIN")
    for n in range(series):
        conn.execute(
            "INSERT INTO series (id, exchange, symbol, interval) VALUES (?, ?, ?, '1m')",
            (n + 1, "binance_futures", f"S{n}USDT"),
        )
        # holes: every candles/HOLES_PER_SERIES-th stretch of (n % 7 + 1) minutes is missing
        stride = candles // HOLES_PER_SERIES
        conn.execute(
            "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?)"
            " INSERT INTO candle_rows SELECT ?, ? + i * 60000, 1503, 1603, 1403, 1553, 2003, 3005,"
            " 7, 1 FROM k WHERE i % ? >= ?",
            (candles, n + 1, T0, stride, n % 7 + 1),
        )
    conn.execute("COMMIT")
    conn.close()


def scan_holes(path: Path) -> float:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    start = time.perf_counter()
    conn.execute(
        "SELECT series, count(*) FROM (SELECT series, open_time, lead(open_time) OVER"
        " (PARTITION BY series ORDER BY open_time) AS next FROM candles WHERE flags & 1)"
        " WHERE next - open_time > 60000 GROUP BY series"
    ).fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def bench(path: Path, series: int, requests: int) -> None:
    async with serving(path, read_s=60) as client:
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            answer = await client.get("/coverage")
            samples.append(time.perf_counter() - start)
            answer.raise_for_status()
        found = answer.json()["series"]
        holes = sum(len(s["missing"]) for s in found)
        assert len(found) == series, len(found)
        ordered = sorted(samples)
        print(
            f"GET /coverage: {len(found)} series, {holes} holes, "
            f"{len(answer.content) / 1e3:.0f} kB: p50 "
            f"{statistics.median(ordered) * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
            f" ({requests} requests)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=600)
    parser.add_argument("--candles", type=int, default=100_000, help="1m candles per series")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coverage.db"
        start = time.perf_counter()
        fill(path, args.series, args.candles)
        print(f"generated {args.series:,} series of {args.candles:,} candles in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        conn = connect_writer(path)
        start = time.perf_counter()
        conn.execute("BEGIN")
        read = coverage.rebuild(conn)
        conn.execute("COMMIT")
        conn.close()
        print(f"runs built from {read:,} candles in {time.perf_counter() - start:.1f} s "
              "(the one-time upgrade of a version-1 database)")  # fmt: skip
        print(f"reference: one SQL scan finding the holes: {scan_holes(path):.2f} s")
        trio.run(bench, path, args.series, args.requests)


if __name__ == "__main__":
    main()
