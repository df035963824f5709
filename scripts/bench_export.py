"""Benchmark streamed exports: a year of 1m candles (525,600) as CSV, NDJSON and Parquet,
and 1h resampled from it; peak RSS growth of feedd while exporting.

Fills a temporary database (the same random walk as bench_api) and times each export twice:
in-process (the store's ``Reader.export`` iterated to the end: reading and encoding alone), and
through the real HTTP API of a feedd started with every exchange disabled, downloaded over
loopback by ``curl`` in a process of its own (so the client's work is not feedd's). RSS is
feedd's process, sampled from just before the export. The reference, measured in the same run:
a bare ``sqlite3`` read of the same rows into Python tuples (``fetchall``), which stores
nothing and encodes nothing: the floor of any export through sqlite3.

Usage: .venv/bin/python scripts/bench_export.py [--minutes 525600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import psutil
import trio
from bench_api import EXCHANGE, SYMBOL, fill, serving

from feedd.store.exportrequest import ExportRequest
from feedd.store.reader import Reader


class PeakRss:
    """The process's resident memory sampled every 5 ms in a thread, from a baseline."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def bare_read(db_path: Path) -> float:
    """Seconds for sqlite3 to hand every stored row to Python (the reference)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    start = time.perf_counter()
    conn.execute(
        "SELECT open_time, open, high, low, close, volume, quote_volume, trades, flags"
        " FROM candles ORDER BY series, open_time"
    ).fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def in_process(reader: Reader, request: ExportRequest) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the process (every thread) and bytes: on a shared machine
    the CPU time says more than the wall time about the export's own cost."""
    start, cpu = time.perf_counter(), time.process_time()
    size = 0
    async for piece in reader.export(request):
        size += len(piece)
    return time.perf_counter() - start, time.process_time() - cpu, size


async def over_http(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    done = await trio.run_process(
        ["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", url], capture_stdout=True
    )
    return time.perf_counter() - start, int(done.stdout)


def line(how: str, interval: str, fmt: str, rows: int, size: int, seconds: float) -> str:
    return (
        f"{how:7s} {interval} {fmt:8s} {rows:,} rows {size / 1e6:5.1f} MB "
        f"{seconds:5.2f} s {rows / seconds:9,.0f} rows/s"
    )


async def bench(db_path: Path, minutes: int, repeat: int) -> None:
    cases = [(fmt, "1m", minutes) for fmt in ("csv", "ndjson", "parquet")]
    cases.append(("csv", "1h", -(-minutes // 60)))
    reader = Reader(db_path)
    async with serving(db_path, read_s=120) as client:
        base = f"{str(client.base_url).rstrip('/')}/ohlcv/{EXCHANGE}/{SYMBOL}"
        for fmt, interval, rows in cases:
            request = ExportRequest(EXCHANGE, SYMBOL, interval, interval != "1m", fmt)
            for _ in range(repeat):
                reference = await trio.to_thread.run_sync(bare_read, db_path)
                with PeakRss() as rss:
                    seconds, cpu, size = await in_process(reader, request)
                print(
                    line("in-proc", interval, fmt, rows, size, seconds)
                    + f" CPU {cpu:5.2f} s RSS +{rss.growth_mb:5.1f} MB"
                    + f" | bare sqlite3 read {reference:5.2f} s"
                )
                with PeakRss() as rss:
                    seconds, size = await over_http(f"{base}/{interval}?format={fmt}")
                print(
                    line("HTTP", interval, fmt, rows, size, seconds)
                    + f" RSS +{rss.growth_mb:5.1f} MB"
                )
    reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=525_600, help="1m candles stored")
    parser.add_argument("--repeat", type=int, default=3, help="downloads per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        start = time.perf_counter()
        fill(db_path, args.minutes)
        print(f"stored {args.minutes:,} 1m candles in {time.perf_counter() - start:.1f} s")
        trio.run(bench, db_path, args.minutes, args.repeat)


if __name__ == "__main__":
    main()
