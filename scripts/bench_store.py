"""Benchmark the store: upsert rate, bytes per candle, range reads and 1h resampling.

Usage: .venv/bin/python scripts/bench_store.py [--series 20] [--minutes 10000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from feedd.candle import Candle, Source
from feedd.store.database import Database
from feedd.store.reader import Reader
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings

T0 = 1_700_006_400_000


def realistic(series: int, minutes: int, seed: int = 1) -> list[Candle]:
    """Random-walk 1m candles, time-interleaved across series as live collection writes them."""
    rng = random.Random(seed)
    prices = [rng.choice([95_000.0, 3_400.0, 180.0, 2.5, 0.35]) for _ in range(series)]
    out = []
    for k in range(minutes):
        for s in range(series):
            p0 = prices[s]
            places = 1 if p0 > 10_000 else 2 if p0 > 100 else 4
            p1 = p0 * (1 + rng.gauss(0, 0.0008))
            prices[s] = p1
            hi = max(p0, p1) * (1 + abs(rng.gauss(0, 0.0004)))
            lo = min(p0, p1) * (1 - abs(rng.gauss(0, 0.0004)))
            vol = rng.lognormvariate(3, 1.5)
            out.append(
                Candle(
                    "binance_futures",
                    f"S{s:03d}USDT",
                    "1m",
                    T0 + k * 60_000,
                    f"{p0:.{places}f}",
                    f"{hi:.{places}f}",
                    f"{lo:.{places}f}",
                    f"{p1:.{places}f}",
                    f"{vol:.3f}",
                    f"{vol * p0:.5f}",
                    rng.randint(50, 20_000),
                    True,
                    Source.WS,
                )
            )
    return out


def pct(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms"


def bench_upsert(path: Path, candles: list[Candle], batch: int) -> None:
    db = Database.open(path)
    start = time.perf_counter()
    for i in range(0, len(candles), batch):
        db.write(candles[i : i + batch])
    elapsed = time.perf_counter() - start
    print(f"upsert (Database.write, batches of {batch}): {len(candles) / elapsed:,.0f} rows/s")
    start = time.perf_counter()
    for i in range(0, len(candles), batch):
        db.write(candles[i : i + batch])
    elapsed = time.perf_counter() - start
    print(f"re-upsert of the same keys (all updates): {len(candles) / elapsed:,.0f} rows/s")
    db.close()


def bench_size(path: Path, candles: list[Candle], series: int, keep: int, batch: int) -> None:
    """Fill past ``keep`` per series with retention after every batch, as the writer runs."""
    db = Database.open(path)
    prune_times = []
    for i in range(0, len(candles), batch):
        db.write(candles[i : i + batch])
        start = time.perf_counter()
        db.prune(keep)
        prune_times.append(time.perf_counter() - start)
    db.checkpoint()
    size = path.stat().st_size
    rows = series * keep
    db.close()
    print(f"size at steady state ({rows:,} rows kept, retention running): "
          f"{size / rows:.1f} bytes/candle  ({size / 1e6:.1f} MB)")  # fmt: skip
    print(f"prune of {series} series at capacity ({keep:,} each): {pct(prune_times[-20:])}")


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


async def bench_reads(path: Path) -> None:
    reader = Reader(path)
    ex, sym = "binance_futures", "S000USDT"
    await reader.candles(ex, sym, "1m", None, None, 1000)  # warm the connection pool
    print("candles(limit=1000) -> CandleRow:", pct(await timed(
        lambda: reader.candles(ex, sym, "1m", None, None, 1000), 200)))  # fmt: skip
    print("candles_json(limit=1000) -> bytes:", pct(await timed(
        lambda: reader.candles_json(ex, sym, "1m", None, None, 1000), 200)))  # fmt: skip
    rows = await reader.resample(ex, sym, "1h", None, None, 10_000)
    (info,) = [s for s in await reader.series() if s.symbol == sym]
    print(f"resample 1h over {info.count:,} 1m candles ({len(rows)} buckets):", pct(await timed(
        lambda: reader.resample(ex, sym, "1h", None, None, 10_000), 50)))  # fmt: skip
    print("resample 1h, newest 500 buckets:", pct(await timed(
        lambda: reader.resample(ex, sym, "1h", None, None, 500), 50)))  # fmt: skip
    print("series() over the whole store:", pct(await timed(reader.series, 10)))
    reader.close()


async def bench_writer(path: Path, candles: list[Candle], chunk: int) -> None:
    """End to end: lists on a channel -> collector -> writer thread -> SQLite."""
    writer = Writer(
        WriterSettings(backend=SqliteBackend(path), batch_interval_ms=50, max_records=10**9)
    )
    send, recv = trio.open_memory_channel[Sequence[Candle]](64)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        async with send:
            for i in range(0, len(candles), chunk):
                await send.send(candles[i : i + chunk])
    elapsed = time.perf_counter() - start
    s = writer.stats
    print(f"Writer end to end (lists of {chunk}): {len(candles) / elapsed:,.0f} candles/s, "
          f"{s.batches} batches, commit p50 {s.latency_p50_ms:.1f} ms "
          f"p99 {s.latency_p99_ms:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    candles = realistic(args.series, args.minutes)
    print(f"{len(candles):,} candles: {args.series} series x {args.minutes:,} minutes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_upsert(root / "upsert.db", candles, args.batch)
        trio.run(bench_writer, root / "writer.db", candles, 100)
        keep = args.minutes // 2
        bench_size(root / "size.db", candles, args.series, keep, args.batch)
        reads = realistic(2, 100_000, seed=2)
        db = Database.open(root / "reads.db")
        for i in range(0, len(reads), args.batch):
            db.write(reads[i : i + args.batch])
        db.close()
        trio.run(bench_reads, root / "reads.db")


if __name__ == "__main__":
    main()
