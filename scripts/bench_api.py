"""Benchmark candle reads through the real HTTP API: native 1m and 1h resampled from 1m.

Fills a temporary database with one series of 1m candles, starts feedd with every exchange
disabled, then times sequential GETs over loopback (warm-up excluded) from a client in a process
of its own, as any real client is: an httpx client inside feedd's process spends ~5 ms of CPU
per 175 kB page on the same thread as the server, and that was measured as the server's
latency (``--in-process-client`` measures that way still, to compare with older figures).

Usage: .venv/bin/python scripts/bench_api.py [--requests 200] [--minutes 100000]
       [--in-process-client]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import trio

from feedd import config as feedd_config
from feedd import exchanges
from feedd.candle import Candle, Source
from feedd.service import Service, run_service
from feedd.store.database import Database

EXCHANGE, SYMBOL = "binance_futures", "BTCUSDT"
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC
WARMUP = 10
#: the client in its own process: plain http.client on one keep-alive connection
_CLIENT = """
import http.client, json, sys, time
host, port, path, warmup, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:])
conn = http.client.HTTPConnection(host, port, timeout=120)
samples, body = [], b""
for i in range(warmup + n):
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - start
    if response.status != 200:
        sys.exit(f"GET {path}: HTTP {response.status} {body[:300]!r}")
    if i >= warmup:
        samples.append(took)
print(json.dumps({"samples": samples, "rows": len(json.loads(body)), "bytes": len(body)}))
"""


def minutes(count: int, seed: int = 1) -> Iterator[Candle]:
    """A random walk with exchange-like strings: one price decimal, 3 and 5 for the volumes."""
    rng = random.Random(seed)
    price = 95_000.0
    for k in range(count):
        close = price * (1 + rng.gauss(0, 0.0008))
        high = max(price, close) * (1 + abs(rng.gauss(0, 0.0004)))
        low = min(price, close) * (1 - abs(rng.gauss(0, 0.0004)))
        volume = rng.lognormvariate(3, 1.5)
        yield Candle(EXCHANGE, SYMBOL, "1m", T0 + k * 60_000, f"{price:.1f}", f"{high:.1f}",
                     f"{low:.1f}", f"{close:.1f}", f"{volume:.3f}", f"{volume * price:.5f}",
                     rng.randint(50, 20_000), True, Source.WS)  # fmt: skip
        price = close


def fill(path: Path, count: int, batch: int = 5000) -> None:
    db = Database.open(path)
    try:
        chunk: list[Candle] = []
        for candle in minutes(count):
            chunk.append(candle)
            if len(chunk) == batch:
                db.write(chunk)
                chunk = []
        db.write(chunk)
    finally:
        db.close()


def pct(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def timed(
    client: httpx.AsyncClient, path: str, n: int, *, in_process: bool = False
) -> tuple[list[float], int, int]:
    """Latencies of ``n`` sequential GETs after a warm-up; rows and bytes of the last body.
    From a client process of its own unless ``in_process`` (``client`` itself)."""
    if not in_process:
        url = client.base_url
        argv = [sys.executable, "-c", _CLIENT, str(url.host), str(url.port), path]
        done = await trio.run_process([*argv, str(WARMUP), str(n)], capture_stdout=True)
        found = orjson.loads(done.stdout)
        return found["samples"], found["rows"], found["bytes"]
    for _ in range(WARMUP):
        (await client.get(path)).raise_for_status()
    samples = []
    body = b""
    for _ in range(n):
        start = time.perf_counter()
        response = await client.get(path)
        body = response.content
        samples.append(time.perf_counter() - start)
        response.raise_for_status()
    return samples, len(orjson.loads(body)), len(body)


@asynccontextmanager
async def serving(db_path: Path, read_s: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """feedd with every exchange disabled on ``db_path``, and an HTTP client of its API."""
    loaded = feedd_config.parse(
        {
            "exchanges": {name: {"enabled": False, "symbols": []} for name in exchanges.REGISTRY},
            "port": 0,
        }
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, loaded.config, db_path)
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=read_s) as client:
                yield client
        finally:
            service.stop.set()


async def bench(db_path: Path, requests: int, in_process: bool) -> None:
    cases = [
        ("1m native, limit=1000", "1m", 1000),
        ("1h resampled, limit=1000", "1h", 1000),
        ("1h resampled, limit=100", "1h", 100),
    ]
    summary = []
    async with serving(db_path) as client:
        for label, interval, limit in cases:
            path = f"/ohlcv/{EXCHANGE}/{SYMBOL}/{interval}?limit={limit}"
            samples, rows, size = await timed(client, path, requests, in_process=in_process)
            p50, p99 = pct(samples)
            print(f"GET {path}: {rows} rows, {size / 1000:.0f} kB: "
                  f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({label})")  # fmt: skip
            summary.append(f"{interval}/{limit} p50 {p50:.1f} p99 {p99:.1f}")
    print(f"summary ({requests} requests each, ms): " + "; ".join(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--minutes", type=int, default=100_000, help="1m candles stored")
    parser.add_argument(
        "--in-process-client", action="store_true", help="time with httpx inside feedd's process"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        start = time.perf_counter()
        fill(db_path, args.minutes)
        print(f"stored {args.minutes:,} 1m candles of {EXCHANGE} {SYMBOL} "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        trio.run(bench, db_path, args.requests, args.in_process_client)


if __name__ == "__main__":
    main()
