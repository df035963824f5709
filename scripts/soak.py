"""Soak: feedd (own process) on all three simulated venues for a simulated day or more.

The simulator runs in this process with its clock accelerated (``--speed`` sim ms per real
ms), so 24 simulated hours pass in 86,400 / speed real seconds. Binance's 24 h connection
lifetime is scaled the same way on both sides (the venue closes connections after a
simulated day; feedd is told the same lifetime in real seconds and rotates at 90 % of it),
so the run contains the rotation. feedd's RSS, open file descriptors and threads are
sampled over time; at the end feedd is stopped with SIGTERM and every closed candle in the
database is compared with the simulator's truth.

    python scripts/soak.py                       # 600 symbols x 3 venues, 25 sim hours at 240x
    python scripts/soak.py --sim-hours 1 --symbols 50   # a quick trial

Writes ``artifacts/soak.json`` and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from feedd.intervals import MINUTE_MS, floor_open
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import VENUES, SimSettings
from feedd.sim.symbols import universe
from feedd.sim.venue import TruthCandle
from feedd.store import codec

SEED = 1
DAY_MS = 24 * 3600 * 1000
#: share of the run (after the bootstrap) before RSS counts as warmed up
WARM_UP_SHARE = 0.15
#: most real seconds to wait for feedd to store what the simulator closed before the stop
CATCH_UP_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=600, help="symbols per venue")
    p.add_argument("--speed", type=float, default=240.0, help="sim ms per real ms")
    p.add_argument("--sim-hours", type=float, default=25.0, help="simulated hours to run")
    p.add_argument(
        "--update-interval", type=float, default=0.25, help="real s between forming updates"
    )
    p.add_argument("--bootstrap", type=int, default=240, help="feedd bootstrap_load (candles)")
    p.add_argument("--sample-s", type=float, default=5.0, help="real s between samples")
    p.add_argument("--out", default="artifacts/soak.json")
    return p.parse_args(argv)


def write_config(sim: Simulator, args: argparse.Namespace, folder: Path) -> Path:
    symbols = list(universe(SEED, args.symbols))
    day_s = DAY_MS / 1000 / args.speed
    exchanges: dict[str, Any] = {}
    for name, venue in sim.venues.items():
        exchanges[name] = {"symbols": symbols, "ws_url": venue.ws_url, "rest_url": venue.rest_url}
    # The venue's 24 h limit in real seconds at this speed (see the module docstring).
    exchanges["binance_futures"]["connection_lifetime"] = day_s
    path = folder / "config.json"
    path.write_text(
        json.dumps(
            {
                "exchanges": exchanges,
                "intervals": ["1m"],
                "database_path": "ohlcv.db",
                "bootstrap_load": args.bootstrap,
                "batch_interval": 50,
                "port": 0,
            }
        )
    )
    return path


async def start_feedd(config: Path, log: Path) -> tuple[trio.Process, str]:
    """feedd in its own process; returns it and its base URL (read from its log)."""
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "feedd", "--config", str(config), "--log-level", "info"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    with trio.fail_after(60):
        while (url := served_url(log)) is None:
            if process.returncode is not None:
                raise SystemExit(f"feedd exited early; see {log}")
            await trio.sleep(0.2)  # another process: its log is all there is to watch
    return process, url


def served_url(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if "feedd serving on " in line:
            return line.split("feedd serving on ", 1)[1].split(";", 1)[0].strip()
    return None


def leftovers(folder: Path) -> dict[str, Any]:
    """Database size and the last warnings of feedd's log, read once feedd has stopped."""
    lines = (folder / "feedd.log").read_text(errors="replace").splitlines()
    return {
        "db_bytes": sum(p.stat().st_size for p in folder.glob("ohlcv.db*")),
        "warnings": [line for line in lines if "WARNING" in line or "ERROR" in line][-20:],
    }


def last_closed(db: Path) -> dict[tuple[str, str], int]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT s.exchange, s.symbol, max(c.open_time) FROM candles c"
            " JOIN series s ON s.id = c.series WHERE c.flags & 1 GROUP BY c.series"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {(ex, sym): int(t) for ex, sym, t in rows}


def stored_rows(
    conn: sqlite3.Connection, exchange: str, symbol: str, start: int, end: int
) -> dict[int, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades"
        " FROM candles c JOIN series s ON s.id = c.series WHERE s.exchange = ? AND s.symbol = ?"
        " AND s.interval = '1m' AND c.flags & 1 AND c.open_time BETWEEN ? AND ?",
        (exchange, symbol, start, end),
    ).fetchall()
    return {r[0]: (*(codec.decode_str(v) for v in r[1:7]), r[7]) for r in rows}


def truth_row(t: TruthCandle) -> tuple[Any, ...]:
    return (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades)


def compare_all(
    sim: Simulator, db: Path, symbols: list[str], start: int, end: int
) -> dict[str, Any]:
    """Closed candles in [start, end] per venue: missing, unexpected, wrong (none duplicated:
    the primary key forbids it). Symbol by symbol, so the market computes each bar once."""
    want = (end - start) // MINUTE_MS + 1
    counts = {name: Counter[str]() for name in sim.venues}
    examples: dict[str, list[str]] = {name: [] for name in sim.venues}
    #: per venue, minutes after the window start at which candles are missing, and how many
    missing_at = {name: Counter[int]() for name in sim.venues}
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for symbol in symbols:
            for exchange in sim.venues:
                truth = {
                    t.open_time: truth_row(t) for t in sim.truth(exchange, symbol, "1m", start, end)
                }
                assert len(truth) == want, "truth window is wrong"
                rows = stored_rows(conn, exchange, symbol, start, end)
                c, notes = counts[exchange], examples[exchange]
                c["checked"] += len(truth)
                for t in sorted(truth.keys() - rows.keys()):
                    c["missing"] += 1
                    missing_at[exchange][(t - start) // MINUTE_MS] += 1
                    if len(notes) < 5:
                        notes.append(f"{symbol} {t}: missing")
                c["unexpected"] += len(rows.keys() - truth.keys())
                for t in truth.keys() & rows.keys():
                    if truth[t] != rows[t]:
                        c["wrong"] += 1
                        if len(notes) < 5:
                            notes.append(f"{symbol} {t}: {rows[t]} != {truth[t]}")
    finally:
        conn.close()
    report: dict[str, Any] = {}
    for name in sim.venues:
        minutes = sorted(missing_at[name].items())
        report[name] = {
            "checked": counts[name]["checked"],
            "missing": counts[name]["missing"],
            "unexpected": counts[name]["unexpected"],
            "wrong": counts[name]["wrong"],
            # where in the run the holes are: the first and the last minutes with any
            "missing_by_minute": dict(minutes[:20] + minutes[-20:]),
            "examples": examples[name],
        }
    return report


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    symbols = list(universe(SEED, args.symbols))
    settings = SimSettings(
        seed=SEED,
        speed=args.speed,
        universe_size=max(args.symbols, 600),
        update_interval_s=args.update_interval,
    )
    day_s = DAY_MS / 1000 / args.speed
    run_s = args.sim_hours * 3600 / args.speed
    samples: list[dict[str, Any]] = []
    async with open_simulator(settings) as sim, httpx.AsyncClient(timeout=30) as http:
        sim.venues["binance_futures"].faults.set_lifetime(day_s)
        with tempfile.TemporaryDirectory(prefix="feedd-soak-") as tmp:
            folder = Path(tmp)
            db = folder / "ohlcv.db"
            config = write_config(sim, args, folder)
            launched_ms = sim.now_ms()
            process, url = await start_feedd(config, folder / "feedd.log")
            me = psutil.Process(process.pid)
            t0 = time.monotonic()
            try:
                while (elapsed := time.monotonic() - t0) < run_s:
                    status = (await http.get(url + "/status")).json()
                    memory = me.memory_info()
                    samples.append(
                        {
                            "t_s": round(elapsed, 1),
                            "sim_h": round((sim.now_ms() - launched_ms) / 3_600_000, 2),
                            "rss_mb": round(memory.rss / 2**20, 1),
                            "fds": me.num_fds(),
                            "threads": me.num_threads(),
                            "tasks": status["system"]["tasks"],
                            "committed": status["writer"]["committed"],
                            "pending": status["writer"]["pending"],
                            "p99_ms": status["writer"]["latency_p99_ms"],
                            "connections": {
                                e["name"]: e["connections"] for e in status["exchanges"]
                            },
                            "backfill_pending": sum(
                                e.get("backfill_pending", 0) for e in status["exchanges"]
                            ),
                        }
                    )
                    s = samples[-1]
                    print(
                        f"{s['t_s']:7.1f}s sim {s['sim_h']:5.2f}h rss {s['rss_mb']:6.1f} MB"
                        f" fds {s['fds']:3d} tasks {s['tasks']:4d} committed {s['committed']:>9}"
                        f" p99 {s['p99_ms'] or 0:6.1f} ms backfill {s['backfill_pending']}",
                        flush=True,
                    )
                    await trio.sleep(args.sample_s)
                final_status = (await http.get(url + "/status")).json()
                end = floor_open("1m", sim.now_ms()) - 5 * MINUTE_MS
                with trio.move_on_after(CATCH_UP_S):
                    while True:
                        tails = last_closed(db)
                        if len(tails) == len(symbols) * len(VENUES) and min(tails.values()) >= end:
                            break
                        await trio.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    exit_code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            # Live coverage starts at launch; the bootstrap of 1,800 streams takes minutes of
            # real time (hours simulated), so history before launch is not the soak's question.
            start = floor_open("1m", launched_ms) + MINUTE_MS
            print("comparing with the truth ...", flush=True)
            t_cmp = time.monotonic()
            truth = compare_all(sim, db, symbols, start, end)
            compare_s = time.monotonic() - t_cmp
            sim_stats = {name: dict(v.stats) for name, v in sim.venues.items()}
            files = leftovers(folder)
    return summarise(
        args,
        samples,
        final_status,
        truth,
        exit_code=exit_code,
        window=(start, end),
        sim_stats=sim_stats,
        compare_s=round(compare_s, 1),
        **files,
    )


def summarise(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    status: dict[str, Any],
    truth: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    run_s = args.sim_hours * 3600 / args.speed
    warm = [s for s in samples if s["t_s"] >= run_s * WARM_UP_SHARE and s["backfill_pending"] == 0]
    rss_warm = warm[0]["rss_mb"] if warm else None
    rss_end = samples[-1]["rss_mb"] if samples else None
    rss_max = max((s["rss_mb"] for s in warm), default=None)
    growth = (
        round((max(rss_end, rss_max) - rss_warm) / rss_warm * 100, 1)
        if rss_warm and rss_end and rss_max
        else None
    )
    window_start, window_end = extra.pop("window")
    return {
        "settings": {
            "symbols_per_venue": args.symbols,
            "venues": list(VENUES),
            "speed": args.speed,
            "sim_hours": args.sim_hours,
            "real_seconds": round(run_s, 1),
            "update_interval_s": args.update_interval,
            "bootstrap_load": args.bootstrap,
            "binance_lifetime_real_s": round(DAY_MS / 1000 / args.speed, 1),
        },
        "rss_mb": {
            "start": samples[0]["rss_mb"] if samples else None,
            "after_warm_up": rss_warm,
            "end": rss_end,
            "max_after_warm_up": rss_max,
            "growth_after_warm_up_percent": growth,
            "flat": growth is not None and growth <= 10.0,
        },
        "fds": {"start": samples[0]["fds"], "end": samples[-1]["fds"]} if samples else {},
        "threads": {"start": samples[0]["threads"], "end": samples[-1]["threads"]}
        if samples
        else {},
        # trio tasks: a leak of tasks (per reconnect, per client) would show here first
        "tasks": {
            "start": samples[0]["tasks"],
            "end": samples[-1]["tasks"],
            "max": max(s["tasks"] for s in samples),
        }
        if samples
        else {},
        "writer": status["writer"],
        "exchanges": {
            e["name"]: {
                k: e.get(k)
                for k in (
                    "connections",
                    "reconnects",
                    "rotations",
                    "gaps_healed",
                    "parse_errors",
                    "messages",
                    "candles",
                    "rest_requests",
                    "rest_rate_limited",
                )
            }
            for e in status["exchanges"]
        },
        "truth": {
            "window": [window_start, window_end],
            "window_minutes": (window_end - window_start) // MINUTE_MS + 1,
            **truth,
        },
        **extra,
        "samples": samples,
    }


def print_table(result: dict[str, Any]) -> None:
    s, rss, writer = result["settings"], result["rss_mb"], result["writer"]
    fds, threads, tasks = result["fds"], result["threads"], result["tasks"]
    rss_row = f"{rss['start']} / {rss['after_warm_up']} / {rss['end']} / {rss['max_after_warm_up']}"
    rows = [
        ("venues x symbols", f"{len(s['venues'])} x {s['symbols_per_venue']}"),
        ("sim hours / real s", f"{s['sim_hours']} h in {s['real_seconds']} s ({s['speed']}x)"),
        ("RSS start / warm / end / max", rss_row + " MB"),
        ("RSS growth after warm-up", f"{rss['growth_after_warm_up_percent']} %"),
        ("RSS flat (<= 10 %)", str(rss["flat"])),
        ("fds start / end", f"{fds.get('start')} / {fds.get('end')}"),
        ("threads start / end", f"{threads.get('start')} / {threads.get('end')}"),
        (
            "trio tasks start / end / max",
            f"{tasks.get('start')} / {tasks.get('end')} / {tasks.get('max')}",
        ),
        ("candles committed", f"{writer['committed']:,}"),
        ("commit p50 / p99", f"{writer['latency_p50_ms']:.1f} / {writer['latency_p99_ms']:.1f} ms"),
        ("database size", f"{result['db_bytes'] / 2**20:.1f} MB"),
        ("feedd exit code (SIGTERM)", str(result["exit_code"])),
    ]
    for name, ex in result["exchanges"].items():
        rows.append(
            (
                f"{name}",
                f"reconnects {ex['reconnects']} rotations {ex['rotations']} "
                f"gaps healed {ex['gaps_healed']} rest {ex['rest_requests']}",
            )
        )
    for name in s["venues"]:
        t = result["truth"][name]
        rows.append(
            (
                f"truth {name}",
                f"{t['checked']:,} closed candles: missing {t['missing']}, "
                f"unexpected {t['unexpected']}, wrong {t['wrong']}",
            )
        )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = trio.run(soak, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"written to {os.fspath(out)}")
    truth_ok = all(
        result["truth"][v][k] == 0 for v in VENUES for k in ("missing", "unexpected", "wrong")
    )
    return 0 if truth_ok and result["rss_mb"]["flat"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
