"""SIGKILL feedd (a real process) again and again: mid-commit, mid-backfill and at random
moments, seeded; restart it each time, and after the last restart the database equals the
simulator's truth over the whole bootstrap window.

"Mid-commit" is observed, not hoped for: a thread watches /proc/locks for feedd holding
SQLite's WAL write lock (byte 120 of the ``-shm`` file, taken by BEGIN IMMEDIATE and held
until COMMIT) and sends SIGKILL the moment it sees it. "Mid-backfill" kills wait until
feedd's /status reports backfill work outstanding; the venues answer the first REST calls
after such a restart with 429/418 + Retry-After, so the backfill is reliably under way.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import httpx
import trio

from chaos.harness import (
    VENUES,
    FeeddProcess,
    config_doc,
    crash_lines,
    poll_until,
    problems,
    write_config,
)
from feedd.intervals import MINUTE_MS, floor_open
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

SEED = 20260601
KILLS = 22
PLAN = {name: ["BTCUSDT", "ETHUSDT"] for name in VENUES}
#: 20 sim hours of history: the first boot's bootstrap takes seconds, so early kills hit it
BOOTSTRAP = 1200
#: SQLite's WAL write lock: byte UNIX_SHM_BASE (120) + WAL_WRITE_LOCK (0) of the -shm file
WAL_WRITE_LOCK_BYTE = 120


def wal_writers(shm: Path) -> set[int]:
    """PIDs that hold the WAL write lock of the database whose -shm file is ``shm``."""
    try:
        inode = shm.stat().st_ino
    except FileNotFoundError:
        return set()
    pids = set()
    with open("/proc/locks") as locks:
        for line in locks:
            # "7: POSIX  ADVISORY  WRITE 1855 fe:00:2172575 120 120"; "->" marks a waiter
            parts = line.split()
            if len(parts) != 8 or parts[1] != "POSIX" or parts[3] != "WRITE":
                continue
            if int(parts[5].rsplit(":", 1)[1]) != inode:
                continue
            end = int(parts[7]) if parts[7] != "EOF" else 1 << 62
            if int(parts[6]) <= WAL_WRITE_LOCK_BYTE <= end:
                pids.add(int(parts[4]))
    return pids


def kill_when_writing(pid: int, shm: Path, timeout: float) -> bool:
    """In a thread: SIGKILL ``pid`` as soon as it holds the WAL write lock. False if it did
    not within ``timeout`` (the caller then kills it anyway, at a random moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid in wal_writers(shm):
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.0002)  # short, and it lets the simulator's thread have the GIL
    return False


async def backfill_under_way(client: httpx.AsyncClient) -> bool:
    try:
        status = (await client.get("/status")).json()
    except httpx.HTTPError:
        return False
    return any(
        e.get("backfill_pending", 0) > 0 or any(s["state"] == "backfilling" for s in e["symbols"])
        for e in status["exchanges"]
        if e["enabled"]
    )


def throttle_rest(sim: Simulator) -> None:
    """The next REST calls of every venue are refused with its rate-limit answer."""
    sim.venues["binance_futures"].faults.rest_throttle(2, 429, 1.0)
    sim.venues["binance_futures"].faults.rest_throttle(1, 418, 1.0)
    # Bybit's HTTP 403 means a 10-minute IP ban; its 10006 (under HTTP 200) is the soft one.
    sim.venues["bybit_futures"].faults.rest_throttle(2, 200, 1.0)
    sim.venues["okx_futures"].faults.rest_throttle(2, 429, 1.0)


async def test_twenty_kills_then_heal(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = write_config(tmp_path / "config.json", {})
    db = tmp_path / "ohlcv.db"
    shm = tmp_path / "ohlcv.db-shm"
    # The first kill lands in the first boot's bootstrap; the rest are drawn by the seed.
    choices = ["commit", "commit", "backfill", "random"]
    kinds = ["backfill"] + [rng.choice(choices) for _ in range(KILLS - 1)]
    observed = {"commit": 0, "backfill": 0, "random": 0}
    async with open_simulator(SimSettings(venues=VENUES)) as sim:
        write_config(config, config_doc(sim, PLAN, bootstrap_load=BOOTSTRAP))
        feedd = FeeddProcess(config, tmp_path / "feedd.log")
        try:
            with trio.fail_after(300):  # a hang guard: ~100 s idle, 150+ at load 9
                for n, kind in enumerate(kinds):
                    if kind == "backfill" and n > 0:
                        throttle_rest(sim)
                    await feedd.start()
                    async with httpx.AsyncClient(base_url=feedd.url, timeout=5) as client:
                        if kind == "backfill":
                            await poll_until(
                                lambda: backfill_under_way(client), 10, "backfill to start"
                            )
                            assert feedd.alive, f"kill {n}: feedd exited by itself"
                            code = await feedd.kill()
                            observed["backfill"] += 1
                        elif kind == "commit":
                            hit = await trio.to_thread.run_sync(
                                kill_when_writing, feedd.pid, shm, 5.0
                            )
                            code = await feedd.kill()
                            observed["commit" if hit else "random"] += 1
                        else:
                            await trio.sleep(rng.uniform(0.1, 1.0))  # the random moment
                            code = await feedd.kill()
                            observed["random"] += 1
                    # Killed by us (not exited, not crashed): SIGKILL is the only way it ended.
                    assert code == -signal.SIGKILL, f"kill {n} ({kind}): exit {code}"
                    for venue in sim.venues.values():
                        venue.faults.clear()
                    await trio.sleep(rng.uniform(0.0, 0.6))  # downtime, up to 36 sim seconds
                # The window: all the bootstrap keeps, up to the last candle closed before the
                # last start, so every hole the kills left must be healed from REST.
                final_start = sim.now_ms()
                start = floor_open("1m", final_start) - (BOOTSTRAP - 5) * MINUTE_MS
                end = floor_open("1m", final_start) - MINUTE_MS
                await feedd.start()
                await poll_until(
                    lambda: not problems(sim, db, PLAN, start, end), 60, "the store to heal"
                )
                assert await feedd.stop() == 0
        finally:
            await feedd.aclose()
        assert problems(sim, db, PLAN, start, end) == []
    assert crash_lines(feedd.log_text()) == []
    assert sum(observed.values()) == KILLS
    # The moments the seed chose did happen: several kills inside a commit and in backfill.
    assert observed["commit"] >= 3, observed
    assert observed["backfill"] >= 3, observed
