"""Benchmark streamed exports: a year of 1m candles (525,600) as CSV, NDJSON and Parquet,
and 1h resampled from it; CPU and peak memory of feedd and of its export worker.

Fills a temporary database (the same random walk as bench_api) and times each export twice:
in-process (the store's ``Reader.export`` iterated to the end: reading and encoding alone), and
through the real HTTP API of a feedd started with every exchange disabled, downloaded over
loopback by ``curl`` in a process of its own (so the client's work is not feedd's). Each is
run by both paths in the same sitting: ``worker`` (the export worker process, ADBC) and
``threads`` (sqlite3 in feedd's threads, ``FEEDD_EXPORT_WORKER=0``, the path before it).
CPU counts feedd and its children (the worker). RSS: feedd's growth over the export and the
worker's peak, from the kernel's high-water marks. The reference, measured in the same run: a
bare ``sqlite3`` read of the same rows into Python tuples (``fetchall``), which stores nothing
and encodes nothing: the floor of any export through sqlite3 in feedd's process.

``--postgres`` times the same exports on the PostgreSQL backend instead (a throwaway server
like the tests'), with the CPU of feedd and of the server's reader backends apart.

Usage: .venv/bin/python scripts/bench_export.py [--minutes 525600] [--repeat 3]
       [--postgres [--connections 0,3]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import psutil
import trio
from bench_api import EXCHANGE, SYMBOL, fill
from bench_postgres import PgServer, serving
from bench_postgres import fill as pg_fill

from feedd.store.exportpool import WORKER_SWITCH
from feedd.store.exportrequest import ExportRequest
from feedd.store.postgres import export as pg_export
from feedd.store.postgres.backend import PostgresBackend
from feedd.store.reader import Reader
from feedd.store.sqlite import SqliteBackend


class PeakRss:
    """Peak resident memory of this process (feedd) from its level before, and of its
    children (the export worker) as it is: the kernel's high-water marks (VmHWM), reset on
    entry through /proc/PID/clear_refs, so nothing samples while the export runs."""

    def __enter__(self) -> PeakRss:
        self.base = _status("self", "VmRSS")
        self.child_base = max((_status(pid, "VmRSS") for pid in _children()), default=0)
        for pid in ["self", *_children()]:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        return self

    def __exit__(self, *_: object) -> None:
        self.peak = _status("self", "VmHWM")
        self.child_peak = max((_status(pid, "VmHWM") for pid in _children()), default=0)

    def __str__(self) -> str:
        text = f"feedd RSS +{(self.peak - self.base) / 1e6:5.1f} MB"
        if self.child_peak:
            # before: imports, and what Arrow's pool kept from earlier exports
            text += (
                f", worker peak {self.child_peak / 1e6:5.1f} MB"
                f" (+{(self.child_peak - self.child_base) / 1e6:5.1f} over its"
                f" {self.child_base / 1e6:5.1f} MB before)"
            )
        return text


def _children() -> list[str]:
    return [str(child.pid) for child in psutil.Process().children()]


def _status(pid: str, field: str) -> int:
    """A memory figure of /proc/PID/status in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its live children (the worker)."""
    total = time.process_time()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


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
    """Wall seconds, CPU seconds of feedd and the worker, and bytes: on a shared machine the
    CPU time says more than the wall time about the export's own cost."""
    start, cpu = time.perf_counter(), cpu_seconds()
    size = 0
    async for piece in reader.export(request):
        size += len(piece)
    return time.perf_counter() - start, cpu_seconds() - cpu, size


async def over_http(url: str) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    done = await trio.run_process(
        ["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", url], capture_stdout=True
    )
    # curl has exited by now: only feedd and the worker are left among the children
    return time.perf_counter() - start, cpu_seconds() - cpu, int(done.stdout)


def line(how: str, path: str, interval: str, fmt: str, rows: int, size: int, seconds: float) -> str:
    return (
        f"{how:7s} {path:7s} {interval} {fmt:8s} {rows:,} rows {size / 1e6:5.1f} MB "
        f"{seconds:5.2f} s {rows / seconds:9,.0f} rows/s"
    )


async def bench(db_path: Path, minutes: int, repeat: int, paths: list[str]) -> None:
    cases = [(fmt, "1m", minutes) for fmt in ("csv", "ndjson", "parquet")]
    cases.append(("csv", "1h", -(-minutes // 60)))
    reader = Reader(db_path)
    async with serving(SqliteBackend(db_path)) as client:
        base = f"{str(client.base_url).rstrip('/')}/ohlcv/{EXCHANGE}/{SYMBOL}"
        if "worker" in paths:
            os.environ[WORKER_SWITCH] = "1"
            start = time.perf_counter()
            one = ExportRequest(EXCHANGE, SYMBOL, "1m", False, "csv", limit=1)
            await in_process(reader, one)
            (
                await client.get(f"{base}/1m", params={"format": "csv", "limit": 1})
            ).raise_for_status()
            print(
                f"workers started by a first export of one row: {time.perf_counter() - start:.2f} s"
                f", worker RSS then (its imports): "
                + ", ".join(f"{_status(pid, 'VmRSS') / 1e6:.1f} MB" for pid in _children())
            )
        for fmt, interval, rows in cases:
            request = ExportRequest(EXCHANGE, SYMBOL, interval, interval != "1m", fmt)
            for _ in range(repeat):
                reference = await trio.to_thread.run_sync(bare_read, db_path)
                print(f"bare sqlite3 read of every row: {reference:5.2f} s")
                for path in paths if interval == "1m" else ["threads"]:
                    os.environ[WORKER_SWITCH] = "1" if path == "worker" else "0"
                    with PeakRss() as rss:
                        seconds, cpu, size = await in_process(reader, request)
                    print(
                        line("in-proc", path, interval, fmt, rows, size, seconds)
                        + f" CPU {cpu:5.2f} s {rss}"
                    )
                    with PeakRss() as rss:
                        seconds, cpu, size = await over_http(f"{base}/{interval}?format={fmt}")
                    print(
                        line("HTTP", path, interval, fmt, rows, size, seconds)
                        + f" CPU {cpu:5.2f} s {rss}"
                    )
    reader.close()


async def bench_postgres(
    backend: PostgresBackend, minutes: int, repeat: int, server: PgServer, connections: list[int]
) -> None:
    reader = backend.open_reader()
    # The first reads after a bulk load set PostgreSQL's hint bits (writing every page): 3-5x
    # slower, and not what an export of settled candles costs.
    start = time.perf_counter()
    await in_process(reader, ExportRequest(EXCHANGE, SYMBOL, "1m", False, "parquet"))
    print(f"first read after the load (not counted): {time.perf_counter() - start:.2f} s")
    async with serving(backend) as client:
        base = f"{str(client.base_url).rstrip('/')}/ohlcv/{EXCHANGE}/{SYMBOL}"
        for fmt in ("csv", "ndjson", "parquet"):
            request = ExportRequest(EXCHANGE, SYMBOL, "1m", False, fmt)
            for _ in range(repeat):
                for count in connections:  # alternately, so that the load is the same
                    pg_export.CONNECTIONS = count
                    path = f"pg/{count}"
                    served = server.cpu_seconds()
                    with PeakRss() as rss:
                        seconds, own, size = await in_process(reader, request)
                    served = server.cpu_seconds() - served
                    print(
                        line("in-proc", path, "1m", fmt, minutes, size, seconds)
                        + f" CPU feedd {own:5.2f} s server {served:5.2f} s {rss}"
                        + f" load {os.getloadavg()[0]:.1f}"
                    )
                    served = server.cpu_seconds()
                    with PeakRss() as rss:
                        seconds, own, size = await over_http(f"{base}/1m?format={fmt}")
                    served = server.cpu_seconds() - served
                    print(
                        line("HTTP", path, "1m", fmt, minutes, size, seconds)
                        + f" CPU feedd {own:5.2f} s server {served:5.2f} s {rss}"
                        + f" load {os.getloadavg()[0]:.1f}"
                    )
    reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=525_600, help="1m candles stored")
    parser.add_argument("--repeat", type=int, default=3, help="downloads per case")
    parser.add_argument(
        "--paths",
        default="worker,threads",
        help="export paths to compare: worker (ADBC in the export worker process), threads"
        " (sqlite3 in feedd's threads, FEEDD_EXPORT_WORKER=0)",
    )
    parser.add_argument("--db", type=Path, help="an existing database filled by this script")
    parser.add_argument("--postgres", action="store_true", help="on PostgreSQL instead")
    parser.add_argument(
        "--connections",
        default=str(pg_export.CONNECTIONS),
        help="PostgreSQL: pages asked for ahead, alternated (e.g. 0,3; 0: one page at a time)",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.postgres:
        server = PgServer()
        try:
            server.start()
            name = server.create_database()
            backend = PostgresBackend(server.dsn(name))
            backend.prepare()
            took = pg_fill(backend, args.minutes)
            print(f"stored {args.minutes:,} 1m candles in PostgreSQL in {took:.1f} s")
            # Until autovacuum analyzes the fresh table, each page is planned as a scan of
            # every row and a sort (1.2-1.5 s a page): time the plan a settled table gets.
            server.admin("ANALYZE candles", dbname=name)
            counts = [int(n) for n in args.connections.split(",")]
            trio.run(bench_postgres, backend, args.minutes, args.repeat, server, counts)
        finally:
            server.destroy()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = args.db or Path(tmp) / "bench.db"
            if args.db is None:
                start = time.perf_counter()
                fill(db_path, args.minutes)
                print(f"stored {args.minutes:,} 1m candles in {time.perf_counter() - start:.1f} s")
            minutes = args.minutes
            if args.db is not None:  # the rows it holds, not --minutes, for the rates
                with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
                    minutes = c.execute("SELECT count(*) FROM candles").fetchone()[0]
            trio.run(bench, db_path, minutes, args.repeat, args.paths.split(","))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
