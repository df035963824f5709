"""Benchmark reads on PostgreSQL against SQLite, same machine, same run, same candles.

Starts a throwaway PostgreSQL server like the tests' (tests/pgserver.py: initdb in a temp
folder, loopback, fsync off), stores the same 1m candles of one series in it and in a SQLite
file, then times: a 1,000-row page (``candles_json``, what ``GET /ohlcv`` serves) through
each reader, a 1h resample over every stored minute, and ``GET /ohlcv`` through feedd's HTTP
API running on each backend (every exchange disabled), from a client in a process of its own
(see scripts/bench_api.py). Prints p50/p99 in milliseconds, and for reader calls the CPU
milliseconds each costs (client process plus PostgreSQL's backends), which a machine busy with
other work does not inflate the way it does wall-clock latency.

Usage: .venv/bin/python scripts/bench_postgres.py [--minutes 100000] [--requests 200]
       [--in-process-client]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from bench_api import minutes, pct, timed

from feedd import config as feedd_config
from feedd import exchanges
from feedd.candle import Candle
from feedd.service import Service, run_service
from feedd.store.backend import Backend, ReadStore
from feedd.store.postgres.backend import PostgresBackend
from feedd.store.sqlite import SqliteBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgserver import PgServer

EXCHANGE, SYMBOL = "binance_futures", "BTCUSDT"
WARMUP = 10


def fill(backend: Backend, count: int, batch: int = 5_000) -> float:
    """Store ``count`` minutes through the backend's own writer; seconds taken."""
    start = time.perf_counter()
    conn = backend.open_writer(busy_timeout_ms=2_000)
    try:
        chunk: list[Candle] = []
        for candle in minutes(count):
            chunk.append(candle)
            if len(chunk) == batch:
                conn.write(chunk)
                chunk = []
        conn.write(chunk)
    finally:
        conn.close()
    return time.perf_counter() - start


async def sampled(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(WARMUP):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


def server_cpu_s(server: PgServer | None) -> float:
    """CPU seconds used so far by the server processes serving feedd's readers (0 for
    SQLite, which reads in this process). With 2 cores shared by other work, wall-clock
    latencies measure the queue for a core as much as the query; CPU per call does not."""
    if server is None:
        return 0.0
    pids = server.admin("SELECT pid FROM pg_stat_activity WHERE application_name = 'feedd-reader'")
    ticks = 0
    for (pid,) in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def bench_reader(
    kind: str, reader: ReadStore, count: int, n: int, server: PgServer | None
) -> dict[str, str]:
    """p50/p99 of each read through the ``ReadStore`` itself (no HTTP), and the CPU each
    call costs (this process plus, on PostgreSQL, the server's reader backends)."""
    resample_limit = count // 60 + 1
    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "candles_json 1,000 rows": lambda: reader.candles_json(EXCHANGE, SYMBOL, "1m"),
        f"resample 1h over {count:,} 1m rows": lambda: reader.resample_json(
            EXCHANGE, SYMBOL, "1h", limit=resample_limit
        ),
        "resample 1h newest 1,000": lambda: reader.resample_json(EXCHANGE, SYMBOL, "1h"),
    }
    out = {}
    for label, fn in cases.items():
        runs = n if "over" not in label else max(20, n // 4)
        await sampled(fn, 1)  # connections opened: their server processes are counted
        cpu = time.process_time() + server_cpu_s(server)
        samples = await sampled(fn, runs)
        cpu = time.process_time() + server_cpu_s(server) - cpu
        p50, p99 = pct(samples)
        per_call = cpu * 1000 / (runs + WARMUP)
        out[label] = f"p50 {p50:6.2f}  p99 {p99:6.2f}  cpu/call {per_call:6.2f}"
        print(f"  {kind:10} {label:34} {out[label]}  ({runs} runs)", flush=True)
    page = await reader.resample_json(EXCHANGE, SYMBOL, "1h", limit=resample_limit)
    assert page.count == (count + 59) // 60, page.count
    return out


@asynccontextmanager
async def serving(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    loaded = feedd_config.parse(
        {
            "exchanges": {name: {"enabled": False, "symbols": []} for name in exchanges.REGISTRY},
            "port": 0,
        }
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, loaded.config, backend)
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield client
        finally:
            service.stop.set()


async def bench_http(
    kind: str, backend: Backend, n: int, in_process: bool, server: PgServer | None
) -> None:
    """p50/p99 of ``GET /ohlcv``, and the CPU each request costs feedd's process (server,
    and the client too when ``in_process``) plus, on PostgreSQL, its reader backends."""
    async with serving(backend) as client:
        for interval in ("1m", "1h"):
            path = f"/ohlcv/{EXCHANGE}/{SYMBOL}/{interval}?limit=1000"
            await timed(client, path, 1, in_process=True)  # the reader's connections open
            cpu = time.process_time() + server_cpu_s(server)
            samples, rows, size = await timed(client, path, n, in_process=in_process)
            cpu = time.process_time() + server_cpu_s(server) - cpu
            per_call = cpu * 1000 / (n + WARMUP)
            p50, p99 = pct(samples)
            label = f"GET {path} ({rows} rows, {size / 1000:.0f} kB):"
            print(f"  {kind:10} {label} p50 {p50:6.2f}  p99 {p99:6.2f}  cpu/req {per_call:6.2f}")


async def bench(
    backends: dict[str, Backend], count: int, n: int, server: PgServer, in_process: bool
) -> None:
    print("through the reader (ms):")
    for kind, backend in backends.items():
        reader = backend.open_reader()
        try:
            await bench_reader(kind, reader, count, n, server if kind == "postgresql" else None)
        finally:
            reader.close()
    where = "in feedd's process" if in_process else "in its own process"
    print(f"through feedd's HTTP API, the client {where} (ms):")
    for kind, backend in backends.items():
        pg = server if kind == "postgresql" else None
        await bench_http(kind, backend, n, in_process, pg)
    print(f"load average after the reads: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=100_000, help="1m candles stored")
    parser.add_argument("--requests", type=int, default=200, help="timed calls per case")
    parser.add_argument(
        "--in-process-client", action="store_true", help="time with httpx inside feedd's process"
    )
    args = parser.parse_args()
    server = PgServer()
    try:
        server.start()
        dsn = server.dsn(server.create_database())
        with tempfile.TemporaryDirectory() as tmp:
            backends: dict[str, Backend] = {
                "sqlite": SqliteBackend(Path(tmp) / "bench.db"),
                "postgresql": PostgresBackend(dsn),
            }
            for kind, backend in backends.items():
                backend.prepare()
                took = fill(backend, args.minutes)
                print(f"{kind}: stored {args.minutes:,} 1m candles in {took:.1f} s", flush=True)
            print(
                f"load average before the reads: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            trio.run(bench, backends, args.minutes, args.requests, server, args.in_process_client)
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
