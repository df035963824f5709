"""SIGKILL feedd mid-stream, restart it, and prove nothing is missing after healing.

With ``"writer": "process"`` the store's writer runs in a child process: it must go with a
killed feedd (it exits when its socket closes) and outlive a SIGTERM until feedd has
drained through it.

feedd runs as a real subprocess here, so its state can only be observed from outside: the
test polls the database file at a short interval under a deadline. That is the one place
the suite waits by polling, because a killed process cannot notify anyone.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio
from e2e import compare

from feedd.intervals import MINUTE_MS
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
POLL_S = 0.1


def write_config(sim: Simulator, path: Path, writer: str) -> None:
    venue = sim.venues[EX]
    path.write_text(
        json.dumps(
            {
                "exchanges": {
                    EX: {
                        "symbols": SYMBOLS,
                        "ws_url": venue.ws_url,
                        "rest_url": venue.rest_url,
                        "silence_timeout": 3,
                    }
                },
                "intervals": ["1m"],
                "storage": {"backend": "sqlite", "path": "ohlcv.db", "writer": writer},
                # The window below starts 10 sim minutes before the test: 20 gives the first
                # start 10 real seconds at 60x to bootstrap (10 was missed under load).
                "bootstrap_load": 20,
                "batch_interval": 50,
                "port": 0,
            }
        )
    )


def closed_count(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM candles WHERE flags & 1").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # schema not there yet
    finally:
        conn.close()


async def start_feedd(config: Path) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "feedd", "--config", str(config), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def writer_children(process: trio.Process) -> list[psutil.Process]:
    """feedd's store writer processes (none with the default thread writer)."""
    children = psutil.Process(process.pid).children()
    return [c for c in children if "feedd.store.writeprocess" in c.cmdline()]


async def gone(children: list[psutil.Process]) -> bool:
    """Whether every one of ``children`` has exited (waited for, within a bound)."""
    _, alive = await trio.to_thread.run_sync(lambda: psutil.wait_procs(children, timeout=20))
    return not alive


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_sigkill_then_restart_heals_everything(tmp_path: Path, writer: str) -> None:
    config, db = tmp_path / "config.json", tmp_path / "ohlcv.db"
    children: list[psutil.Process] = []
    async with open_simulator(SimSettings(venues=(EX,))) as sim:
        write_config(sim, config, writer)
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(90):
            process = await start_feedd(config)
            try:
                # bootstrap + live candles; polling: see the module docstring
                while closed_count(db) < 10 * len(SYMBOLS):  # noqa: ASYNC110
                    await trio.sleep(POLL_S)
                await sim.sleep_until_ms(start + 2 * MINUTE_MS + 30_000)  # mid-candle
                children = writer_children(process)
                assert len(children) == (writer == "process")
                process.kill()  # SIGKILL: no drain, no goodbye
                assert await process.wait() == -signal.SIGKILL
                assert await gone(children)  # the writer went with it
                killed_at = sim.now_ms()
                await sim.sleep_until_ms(killed_at + 3 * MINUTE_MS)  # downtime
                process = await start_feedd(config)
                end = sim.now_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS
                window = (start - 10 * MINUTE_MS, end)
                while compare(sim, db, EX, SYMBOLS, *window):  # noqa: ASYNC110
                    await trio.sleep(POLL_S)
                children = writer_children(process)
                assert len(children) == (writer == "process")
                # As systemd stops a service: SIGTERM to every process of it. The writer
                # must ignore it and serve feedd's drain, then exit when feedd closes it.
                for child in children:
                    child.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
                assert await gone(children)
                assert process.stderr is not None
                log = b"".join([chunk async for chunk in process.stderr]).decode()
                assert "writer process" not in log  # it was there until the end
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert compare(sim, db, EX, SYMBOLS, *window) == []
    assert window[1] - window[0] >= 14 * MINUTE_MS
