"""Ingest benchmark: simulator (own process) -> WebSocket -> parse -> writer -> SQLite commit.

Reports sustained candle updates/s from socket to committed row (simulator unpaced), and
p50/p99 latency from frame sent to row committed at a fixed rate (default 1,000 updates/s),
plus peak RSS of the feedd side. Send and commit times are both CLOCK_MONOTONIC, so they
compare across the two processes.

    python scripts/bench_ingest.py --symbols 600 --seconds 10
    python scripts/bench_ingest.py --exchange all
    python scripts/bench_ingest.py --skip-throughput --ws-clients 200

``--ws-clients N`` adds N /ws clients subscribed to every candle, in a process of their own
(like real dashboards elsewhere), to show what fan-out costs ingest latency.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from feedd import config as config_module
from feedd.service import Service, run_service
from feedd.sim.symbols import universe

VENUES = ("binance_futures", "bybit_futures", "okx_futures")


SIM_SEED = 1
#: instruments the simulator lists; feedd only subscribes to listed symbols
SIM_UNIVERSE = 2000


def symbols(count: int) -> list[str]:
    return list(universe(SIM_SEED, SIM_UNIVERSE)[:count])


async def start_sim(venues: Sequence[str], rate: float) -> tuple[trio.Process, dict[str, Any]]:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "feedd.sim",
            "--venues",
            ",".join(venues),
            "--speed",
            "1",
            "--rate",
            str(rate),
            "--max-inbound",
            "0",
            "--seed",
            str(SIM_SEED),
            "--symbols",
            str(SIM_UNIVERSE),
        ],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    urls: dict[str, Any] = {}
    buffer = b""
    while len(urls) < len(venues):
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise SystemExit("simulator exited before printing its URLs")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                entry = json.loads(line)
                if "exchange" in entry:
                    urls[entry["exchange"]] = entry
    return process, urls


def feedd_config(urls: dict[str, Any], count: int, db: Path) -> config_module.Config:
    doc = {
        "exchanges": {
            name: {
                "symbols": symbols(count),
                "ws_url": u["ws_url"],
                "rest_url": u["rest_url"],
                "silence_timeout": 30,
            }
            for name, u in urls.items()
        },
        "intervals": ["1m"],
        "database_path": str(db),
        "bootstrap_load": 0,
        "batch_interval": 50,
        "port": 0,
    }
    return config_module.parse(doc).config


SUBSCRIBE_ALL = b'{"op":"subscribe","topic":"candles"}'


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; the key can be anything)."""
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(b ^ key[n % 4] for n, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


async def run_ws_clients(url: str, count: int) -> None:
    """Child-process mode: ``count`` clients subscribed to every candle, reading until
    terminated. They read raw bytes without decoding frames, so that on a shared 2-core
    machine the clients' own CPU does not stand in for feedd's cost."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = [0]

    async def client(task_status: trio.TaskStatus[None]) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:80]
        await stream.send_all(masked_text_frame(SUBSCRIBE_ALL))
        task_status.started()
        while chunk := await stream.receive_some(65536):
            received[0] += len(chunk)

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                await nursery.start(client)
            print("connected", flush=True)
            async for _ in signals:
                print(json.dumps({"bytes": received[0]}), flush=True)
                nursery.cancel_scope.cancel()
                break


async def start_ws_clients(service: Service, count: int) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--ws-client-process", service.url, str(count)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    with trio.fail_after(60):
        line = await process.stdout.receive_some(100)
    assert line.startswith(b"connected"), line
    return process


async def run_once(
    venues: Sequence[str], count: int, seconds: float, rate: float, ws_clients: int = 0
) -> dict[str, Any]:
    sim, urls = await start_sim(venues, rate)
    clients: trio.Process | None = None
    commits: dict[tuple[str, str, int, str], float] = {}
    peak_rss = 0
    me = psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            cfg = feedd_config(urls, count, db)
            async with trio.open_nursery() as nursery:
                service: Service = await nursery.start(run_service, cfg, db)
                writer = service.state.writer

                recording = trio.CancelScope()

                async def record_commits() -> None:
                    with recording, writer.open_commit_listener(max_buffer=100_000) as listener:
                        async for batch in listener:
                            now = time.monotonic()
                            for c in batch:
                                key = (c.exchange, c.symbol, c.open_time, c.close)
                                commits.setdefault(key, now)

                if rate:
                    nursery.start_soon(record_commits)
                if ws_clients:
                    clients = await start_ws_clients(service, ws_clients)
                await trio.sleep(3)  # warm-up: connect, subscribe, first commits
                sim_proc = psutil.Process(sim.pid)
                sim_proc.cpu_percent()
                me.cpu_percent()
                received0, committed0 = writer.stats.received, writer.stats.committed
                t0 = time.monotonic()
                end = t0 + seconds
                while time.monotonic() < end:
                    await trio.sleep(0.5)
                    peak_rss = max(peak_rss, me.memory_info().rss)
                elapsed = time.monotonic() - t0
                cpu = {"feedd": me.cpu_percent(), "simulator": sim_proc.cpu_percent()}
                received = writer.stats.received - received0
                committed = writer.stats.committed - committed0
                latencies = await _latencies(urls, commits, t0, end) if rate else []
                overflows = service.state.hub.overflows
                if clients is not None:
                    clients.terminate()
                    await clients.wait()
                    clients = None
                recording.cancel()
                service.stop.set()
    finally:
        sim.kill()
        await sim.wait()
        if clients is not None:
            clients.terminate()
            await clients.wait()
    result: dict[str, Any] = {
        "venues": list(venues),
        "symbols": count,
        "rate": rate or "unpaced",
        "updates_per_s": round(received / elapsed),
        "rows_committed_per_s": round(committed / elapsed),
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "cpu_percent": cpu,
    }
    if ws_clients:
        result["ws_clients"] = ws_clients
        result["ws_clients_dropped"] = overflows
    if latencies:
        latencies.sort()
        result["latency_ms"] = {
            "samples": len(latencies),
            "p50": round(latencies[len(latencies) // 2] * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
        }
    return result


async def _latencies(
    urls: dict[str, Any], commits: dict[tuple[str, str, int, str], float], t0: float, end: float
) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient() as client:
        for venue, entry in urls.items():
            after = 0
            while True:
                body = (
                    await client.get(entry["rest_url"] + "/_sim/sendlog", params={"after": after})
                ).json()
                for symbol, open_ms, close, sent in body["rows"]:
                    committed = commits.get((venue, symbol, open_ms, close))
                    if committed is not None and t0 <= sent <= end:
                        out.append(committed - sent)
                # The simulator keeps sending while we read: stop past the window.
                if not body["rows"] or body["rows"][-1][3] > end:
                    break
                after = body["next"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exchange", default="binance_futures", help="venue name, or 'all' for the three at once"
    )
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--ws-clients", type=int, default=0, help="/ws clients reading all candles")
    parser.add_argument("--ws-client-process", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_client_process:
        url, count = args.ws_client_process
        trio.run(run_ws_clients, url, int(count))
        return
    venues = VENUES if args.exchange == "all" else (args.exchange,)
    if not args.skip_throughput:
        print(json.dumps(trio.run(run_once, venues, args.symbols, args.seconds, 0.0)))
    print(
        json.dumps(
            trio.run(
                run_once, venues, args.symbols, args.seconds, args.latency_rate, args.ws_clients
            )
        )
    )


if __name__ == "__main__":
    main()
