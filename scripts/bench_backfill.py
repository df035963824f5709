"""Backfill benchmark: job rate per venue as a share of the venue's limits, and what a running
job costs live ingest latency.

The simulator runs in its own process at real speed (its REST limits per real minute, as the
venues'). For each venue one job fetches ``--days`` of BTCUSDT 1m over REST (Binance's
archive pointed nowhere, so REST is measured) while that venue's live ingest is off; the
rate is taken over the second half (past the bucket's initial burst) and set against what the
venue's documented limit allows (PROTOCOLS.md) and against feedd's budget (half of it).
Then live ingest p50/p99 (frame sent -> row committed, ``scripts/bench_ingest.py``'s method)
is measured with and without a Binance job running, in ``--pairs`` alternating runs (a shared
machine drifts: compare within a pair). The job fetches ``--job-symbols`` symbols of 25 days
so that it runs for the whole window; its rows per second inside the window are reported.
Its REST comes from a second simulator process (``--rest-sim``): see ``ingest_latency``.

Each latency run also reports the event loop's lag, the cores used by feedd and both
simulators, and the writer's counts (live commits, ticks, job turns); ``--noise`` runs pairs
with no job in either, the ratio a shared box gives with no change.

    python scripts/bench_backfill.py --days 28 --symbols 200 --seconds 10
    python scripts/bench_backfill.py --skip-rate --pairs 3        # latency pairs only
    python scripts/bench_backfill.py --skip-rate --pairs 8 --noise  # the noise floor
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

sys.path.insert(0, str(Path(__file__).parent))
import bench_ingest

from feedd import config as config_module
from feedd.service import Service, run_service

DAY_MS = 86_400_000
CLOSED_PORT = "http://127.0.0.1:9"
#: rows per second the venue's documented limit allows for 1m history (PROTOCOLS.md)
DOCUMENTED_ROWS_PER_S = {
    # 2,400 weight/min, 1,500-row pages at weight 10: 240 pages/min
    "binance_futures": 2400 / 10 * 1500 / 60,
    # 600 requests / 5 s per IP, 1,000-row pages
    "bybit_futures": 600 / 5 * 1000,
    # history-candles: 20 requests / 2 s, 100-row pages
    "okx_futures": 20 / 2 * 100,
}


def config(urls: dict[str, Any], db: Path, live: dict[str, list[str]]) -> config_module.Config:
    doc = {
        "exchanges": {
            name: {
                "symbols": live.get(name, []),
                "enabled": name in live,
                "ws_url": u["ws_url"],
                "rest_url": u["rest_url"],
                "archive_url": CLOSED_PORT if name == "binance_futures" else None,
                "silence_timeout": 30,
            }
            for name, u in urls.items()
        },
        "intervals": ["1m"],
        "database_path": str(db),
        "bootstrap_load": 0,
        "batch_interval": 50,
        "max_records": 0,
        "port": 0,
    }
    for settings in doc["exchanges"].values():  # type: ignore[attr-defined]
        if settings["archive_url"] is None:
            del settings["archive_url"]
    return config_module.parse(doc).config


async def start_job(
    service: Service, venue: str, days: int, symbols: tuple[str, ...] = ("BTCUSDT",)
) -> str:
    now = int(time.time() * 1000)
    async with httpx.AsyncClient(base_url=service.url) as client:
        response = await client.post(
            "/backfill",
            json={"exchange": venue, "symbols": list(symbols), "interval": "1m",
                  "since": now - days * DAY_MS},
        )  # fmt: skip
        response.raise_for_status()
        return str(response.json()["id"])


async def job_rate(venue: str, days: int) -> dict[str, Any]:
    sim, urls = await bench_ingest.start_sim([venue], 0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            async with trio.open_nursery() as nursery:
                service: Service = await nursery.start(run_service, config(urls, db, {}), db)
                jobs = service.state.jobs
                assert jobs is not None
                job_id = await start_job(service, venue, days)
                job = jobs.jobs[job_id]
                expected = job.document()["rows_expected"]
                await jobs.wait_for(lambda: job.document()["rows_done"] >= expected * 0.5)
                rows0, t0 = job.document()["rows_done"], time.monotonic()
                await jobs.wait_for(lambda: job.state not in ("queued", "running"))
                rows1, t1 = job.document()["rows_done"], time.monotonic()
                stats = service.state.supervisor.stats.get(venue)
                limited = stats.rest_rate_limited if stats else 0
                service.stop.set()
    finally:
        sim.kill()
        await sim.wait()
    rate = (rows1 - rows0) / (t1 - t0)
    module_budget = DOCUMENTED_ROWS_PER_S[venue]
    return {
        "venue": venue,
        "rows": expected,
        "state": job.state,
        "rows_per_s": round(rate),
        "share_of_documented_limit": round(rate / module_budget, 3),
        "rate_limited": limited,
    }


async def probe_lag(lags: list[float]) -> None:
    """How late the event loop wakes a task sleeping 1 ms: the wait for the GIL (a thread
    parsing or binding) and for a core (the box)."""
    while True:
        t = trio.current_time()
        await trio.sleep(0.001)
        lags.append(trio.current_time() - t - 0.001)


def cpu_s(process: psutil.Process | None) -> float:
    return bench_ingest.cpu_seconds(process) if process is not None else 0.0


def counts(writer: Any) -> dict[str, int]:
    stats = writer.stats
    return {
        "commits": stats.batches,
        # live commit durations (the writer keeps the latest ones), ms
        "commit_p50_ms": round(stats.latency_p50_ms or 0),
        "commit_p99_ms": round(stats.latency_p99_ms or 0),
        "ticks": getattr(writer, "ticks", 0),
        "job_turns": getattr(writer, "job_turns", 0),
    }


def p99(values: list[float]) -> float | None:
    return round(sorted(values)[int(len(values) * 0.99)] * 1000, 1) if values else None


async def ingest_latency(
    symbols: int,
    seconds: float,
    rate: float,
    with_job: bool,
    job_symbols: int = 4,
    rest_sim: bool = True,
    rest_nice: int = 0,
) -> dict[str, Any]:
    venue = "binance_futures"
    sim, urls = await bench_ingest.start_sim([venue], rate)
    # A venue does not hold its WebSocket pushes while it builds our REST pages; the simulator
    # does (100-190 ms per 1,500-row page on a loaded box, its loop blocked), and the frames
    # it queued meanwhile would count as feedd's latency. REST from a second simulator
    # process (same seed, same data) keeps that out; both runs of a pair have it.
    rest, rest_urls = await bench_ingest.start_sim([venue], 0) if rest_sim else (None, urls)
    # The venue's CPU is not on our box: ``rest_nice`` lowers the REST simulator's priority so
    # that building pages for the job takes less from feedd and the live simulator.
    rest_ps = psutil.Process(rest.pid) if rest is not None else None
    if rest_ps is not None and rest_nice:
        rest_ps.nice(rest_nice)
    me, sim_ps = psutil.Process(), psutil.Process(sim.pid)
    lags: list[float] = []
    commits: dict[tuple[str, str, int, str], float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            venue_urls = {venue: {**urls[venue], "rest_url": rest_urls[venue]["rest_url"]}}
            cfg = config(venue_urls, db, {venue: bench_ingest.symbols(symbols)})
            async with trio.open_nursery() as nursery:
                service: Service = await nursery.start(run_service, cfg, db)
                recording = trio.CancelScope()

                async def record() -> None:
                    listener = service.state.writer.open_commit_listener(max_buffer=100_000)
                    with recording, listener as batches:
                        async for batch in batches:
                            now = time.monotonic()
                            for c in batch:
                                commits.setdefault(
                                    (c.exchange, c.symbol, c.open_time, c.close), now
                                )

                nursery.start_soon(record)
                await trio.sleep(3)
                jobs = service.state.jobs
                if with_job:
                    # Past the bucket's initial burst, into the job's steady pace.
                    await start_job(service, venue, 25, tuple(bench_ingest.symbols(job_symbols)))
                # Both runs of a pair measure the same span of the service's life (a run
                # without a job measured from 3 s, with one from 6 s, nearer the start's work).
                await trio.sleep(3)
                rows0 = sum(jobs.rows.values()) if jobs else 0
                cpu0 = [cpu_s(p) for p in (me, sim_ps, rest_ps)]
                writer = service.state.writer
                counts0 = counts(writer)
                probe = trio.CancelScope()

                async def run_probe() -> None:
                    with probe:
                        await probe_lag(lags)

                nursery.start_soon(run_probe)
                t0 = time.monotonic()
                await trio.sleep(seconds)
                end = time.monotonic()
                probe.cancel()
                took = zip((me, sim_ps, rest_ps), cpu0, strict=True)
                cpu = [(cpu_s(p) - c0) / (end - t0) for p, c0 in took]
                after = counts(writer)
                turns = {k: v if k.endswith("_ms") else v - counts0[k] for k, v in after.items()}
                fetched = (sum(jobs.rows.values()) if jobs else 0) - rows0
                still_running = bool(jobs and jobs.active())
                limited = sum(s.rest_rate_limited for s in service.state.supervisor.stats.values())
                await trio.sleep(1)  # frames sent at the window's end commit too
                # frame left the simulator -> row committed (bench_ingest's measure)
                sent = await bench_ingest._send_log(urls, t0, end)
                latencies = sorted(
                    commits[key] - t for key, t in sent.items() if commits.get(key, -1.0) >= t
                )
                recording.cancel()
                service.stop.set()
    finally:
        for process in (sim, rest):
            if process is not None:
                process.kill()
                await process.wait()
    return {
        "job_running": with_job,
        "rest_sim": "separate" if rest_sim else "shared",
        "load": round(os.getloadavg()[0], 1),
        # rows the job stored inside the window, and whether it lasted the whole window
        "job_rows_fetched": fetched,
        "job_rows_per_s": round(fetched / (end - t0)),
        "job_ran_throughout": still_running,
        "rate_limited": limited,
        "samples": len(latencies),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": p99(latencies),
        # the event loop's lateness waking a 1 ms sleep (GIL and CPU waits)
        "loop_lag_p99_ms": p99(lags),
        # cores used over the window: feedd (this process), the live and the REST simulator
        "cpu": {"feedd": round(cpu[0], 2), "sim": round(cpu[1], 2), "rest_sim": round(cpu[2], 2)},
        # commits (live, non-empty), ticks of the commit loop, turns a job asked for at once
        "writer": turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=28, help="history per job (sim keeps 30)")
    parser.add_argument("--okx-days", type=int, default=4, help="OKX: 100-row pages, slow")
    parser.add_argument("--venues", default=",".join(DOCUMENTED_ROWS_PER_S))
    parser.add_argument("--symbols", type=int, default=200, help="live symbols for latency")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--pairs", type=int, default=2, help="latency runs without + with")
    parser.add_argument("--job-symbols", type=int, default=4, help="symbols the latency job has")
    parser.add_argument(
        "--rest-sim",
        choices=("separate", "shared"),
        default="separate",
        help="latency runs: the job's REST from a second simulator process, or the live one",
    )
    parser.add_argument(
        "--rest-nice", type=int, default=0, help="niceness of the REST simulator (0: as ours)"
    )
    parser.add_argument(
        "--noise",
        action="store_true",
        help="both runs of a pair without a job: the ratio a shared box gives with no change",
    )
    args = parser.parse_args()
    for venue in [] if args.skip_rate else args.venues.split(","):
        days = args.okx_days if venue == "okx_futures" else args.days
        print(json.dumps(trio.run(job_rate, venue, days)), flush=True)
    if args.skip_latency:
        return
    ratios, lag_ratios, job_rates, loads, limited = [], [], [], [], 0
    second_run = (False, False) if args.noise else (False, True)
    for _ in range(args.pairs):
        pair = []
        for with_job in second_run:
            result = trio.run(
                ingest_latency,
                args.symbols,
                args.seconds,
                args.latency_rate,
                with_job,
                args.job_symbols,
                args.rest_sim == "separate",
                args.rest_nice,
            )
            print(json.dumps(result), flush=True)
            pair.append(result)
            loads.append(result["load"])
            limited += result["rate_limited"]
            if with_job:
                job_rates.append(result["job_rows_per_s"])
        if None not in (pair[0]["p99_ms"], pair[1]["p99_ms"]):
            ratios.append(pair[1]["p99_ms"] / pair[0]["p99_ms"])
        if pair[0]["loop_lag_p99_ms"] and pair[1]["loop_lag_p99_ms"]:
            lag_ratios.append(pair[1]["loop_lag_p99_ms"] / pair[0]["loop_lag_p99_ms"])
    if ratios:
        summary = {
            "second_run": "without a job (noise floor)" if args.noise else "with a job",
            "p99_second_over_first": [round(r, 2) for r in ratios],
            "median": round(statistics.median(ratios), 2),
            "loop_lag_p99_ratio_median": round(statistics.median(lag_ratios), 2)
            if lag_ratios
            else None,
            # the job's own rate: a change that buys latency by starving the job shows here
            "job_rows_per_s_median": round(statistics.median(job_rates)) if job_rates else None,
            "rate_limited": limited,
            "load": [min(loads), max(loads)],
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
