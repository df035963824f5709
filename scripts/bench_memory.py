"""Memory and CPU of feedd as an operator runs it: ``python -m feedd`` in a process of its own,
against the simulator, with nothing of the benchmark inside it.

``scripts/bench_ingest.py`` runs feedd inside its own measuring process, so its
``peak_rss_mb`` also counts the benchmark (imports, the commit timings). This one starts the
service from a config file, as systemd would, waits out the bootstrap (``--warm-up``), then
samples the process once a second over ``--seconds``: resident memory (first, last, peak) and
CPU (user + system, every thread). CPU per row divides that CPU by the rows the writer
committed in the window, read from ``/status``, and is also split between the event loop's
thread and the others (the writer's thread, chiefly). Every update is a new closed candle (the
simulator's ``--bench-closed``), as in bench_ingest.py.

    python scripts/bench_memory.py                           # unpaced, then 2,000/s: 60 s each
    python scripts/bench_memory.py --rates 0,2000,20 --seconds 90 --symbols 600

The issue's memory goal (#17) is at most 70 MB with 600 symbols.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from bench_ingest import feedd_config, start_sim

from feedd import config as config_module

#: the line feedd logs once its HTTP API listens (feedd/service.py)
SERVING = b"feedd serving on "


async def start_feedd(config: Path) -> tuple[trio.Process, str]:
    """``python -m feedd`` on ``config``; its URL, taken from the log line saying it serves."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "feedd", "--config", str(config), "--log-level", "info"],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(60):
        while SERVING not in seen or b"\n" not in seen[seen.index(SERVING) :]:
            chunk = await process.stderr.receive_some()
            if not chunk:
                raise SystemExit(f"feedd exited before serving:\n{seen.decode(errors='replace')}")
            seen += chunk
    url = seen[seen.index(SERVING) + len(SERVING) :].split(b";")[0].decode()
    return process, url


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Keep reading feedd's log so that a full pipe never blocks it."""
    while await stream.receive_some():
        pass


async def measure(rate: float, count: int, seconds: float, warm_up: float) -> dict[str, Any]:
    sim, urls = await start_sim(["binance_futures"], rate)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.json"
            config_module.save(config, feedd_config(urls, count, Path(tmp) / "bench.db"))
            feedd, url = await start_feedd(config)
            try:
                async with trio.open_nursery() as nursery:
                    assert feedd.stderr is not None
                    nursery.start_soon(drain, feedd.stderr)
                    result = await _sample(psutil.Process(feedd.pid), url, seconds, warm_up)
                    feedd.terminate()
                    with trio.fail_after(30):
                        await feedd.wait()
            finally:
                feedd.kill()
    finally:
        sim.kill()
        await sim.wait()
    return {"rate": rate or "unpaced", "symbols": count, **result}


async def _sample(
    process: psutil.Process, url: str, seconds: float, warm_up: float
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:

        async def committed() -> int:
            return int((await client.get("/status")).json()["writer"]["committed"])

        await trio.sleep(warm_up)
        rss: list[int] = []
        cpu0, loop0 = _cpu(process), _loop_cpu(process)
        rows0, t0 = await committed(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await trio.sleep(1)
            rss.append(process.memory_info().rss)
        cpu, loop = _cpu(process) - cpu0, _loop_cpu(process) - loop0
        rows, elapsed = await committed() - rows0, time.monotonic() - t0
    return {
        "rss_first_mb": round(rss[0] / 2**20, 1),
        "rss_last_mb": round(rss[-1] / 2**20, 1),
        "rss_peak_mb": round(max(rss) / 2**20, 1),
        "rows_committed_per_s": round(rows / elapsed),
        "cpu_percent": round(cpu / elapsed * 100, 1),
        "cpu_us_per_row": round(cpu / rows * 1e6, 1) if rows else None,
        # The event loop's thread against the rest (the writer's, chiefly): where a change acts.
        "loop_us_per_row": round(loop / rows * 1e6, 1) if rows else None,
        "other_threads_us_per_row": round((cpu - loop) / rows * 1e6, 1) if rows else None,
    }


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _loop_cpu(process: psutil.Process) -> float:
    """CPU of the main thread, which runs the event loop (its thread id is the process id)."""
    main = next(t for t in process.threads() if t.id == process.pid)
    return float(main.user_time + main.system_time)


async def run(args: argparse.Namespace) -> None:
    for rate in args.rates:
        result = await measure(rate, args.symbols, args.seconds, args.warm_up)
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[0.0, 2000.0],
        help="updates per second, comma-separated (0: unpaced); default 0,2000",
    )
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=60.0, help="sampled window per rate")
    parser.add_argument(
        "--warm-up", type=float, default=15.0, help="seconds before sampling (the bootstrap)"
    )
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
