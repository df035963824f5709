"""Attacks on feedd's connections (issue #12.A and C), from another process: twice its cap of
connections held open (idle keep-alive ones, silent ones, headers never finished) under a low
descriptor limit, and request bodies sent one byte at a time from four addresses, both
renewed as fast as feedd closes them.

Checked: feedd neither crashes nor runs out of descriptors, ingest goes on (the store equals
the truth over the attack), a new client is answered at once, and the attackers are the ones
whose connections are closed.
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import trio

from chaos.harness import (
    VENUES,
    FeeddProcess,
    config_doc,
    crash_lines,
    last_closed_minute,
    poll_until,
    problems,
    read_line,
    write_config,
)
from feedd.intervals import MINUTE_MS
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.sim.symbols import universe
from feedd.web.peer import caps_for

ABUSER = Path(__file__).with_name("abuser.py")
PLAN = {name: list(universe(1, 600))[:5] for name in VENUES}
FD_LIMIT = 512
#: a fresh client's request while the attack runs: milliseconds unattacked, 0.06 s under slow
#: bodies and 2.8-5.2 s at worst under the connection churn on this shared 2-core machine
ANSWER_S = 15.0
#: sim minutes the attack lasts (a real second each)
ATTACK_MINUTES = 15


def limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextlib.asynccontextmanager
async def attacking(mode: str, port: int, count: int) -> AsyncIterator[dict[str, int]]:
    """The abuser process in ``mode`` while the block runs; yields its counts at the end."""
    counts: dict[str, int] = {}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ABUSER), mode, str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        with trio.fail_after(60):
            assert orjson.loads(await read_line(process.stdout)) == {"open": count}
        yield counts
        await process.stdin.aclose()
        with trio.fail_after(30):
            counts.update(orjson.loads(await read_line(process.stdout))["closed_by_feedd"])
    finally:
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def fresh_answers(url: str, times: int) -> list[float]:
    """Seconds each of ``times`` requests took, each on a new connection from its own address."""
    took: list[float] = []
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.9")
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
        for _ in range(times):
            start = trio.current_time()
            response = await client.get("/health", headers={"Connection": "close"})
            assert response.status_code == 200, response.text
            took.append(trio.current_time() - start)
            await trio.sleep(0.5)  # spread over the attack
    return took


async def run_attack(
    tmp_path: Path, mode: str, count: int, fd_limit: bool
) -> tuple[Simulator, FeeddProcess, dict[str, int], list[float], int, int]:
    settings = SimSettings(venues=VENUES)
    async with open_simulator(settings) as sim:
        config = write_config(tmp_path / "config.json", config_doc(sim, PLAN, bootstrap_load=5))
        feedd = FeeddProcess(
            config, tmp_path / "feedd.log", preexec_fn=limit_descriptors if fd_limit else None
        )
        try:
            await feedd.start()
            port = int(feedd.url.rsplit(":", 1)[1])
            start = last_closed_minute(sim) + MINUTE_MS
            await sim.sleep_until_ms(start + MINUTE_MS)
            async with attacking(mode, port, count) as counts:
                attack_from = last_closed_minute(sim, 0)
                took = await fresh_answers(feedd.url, 2 * ATTACK_MINUTES)
                end = last_closed_minute(sim)
            db = tmp_path / "ohlcv.db"
            await poll_until(lambda: not problems(sim, db, PLAN, start, end), 30, "the truth")
            assert end - attack_from >= (ATTACK_MINUTES - 3) * MINUTE_MS
            assert feedd.alive, "feedd exited by itself"
            assert await feedd.stop() == 0
        finally:
            await feedd.aclose()
    log = feedd.log_text()
    assert crash_lines(log) == [], log[-3000:]
    assert "Too many open files" not in log
    return sim, feedd, counts, took, start, end


async def test_twice_the_connection_cap_held_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    total, _per_client = caps_for(FD_LIMIT)
    # Twice the cap, and more than the descriptors feedd may open at all.
    count = max(2 * total, FD_LIMIT + 128)
    _sim, feedd, counts, took, _start, _end = await run_attack(
        tmp_path, "connections", count, fd_limit=True
    )
    print(f"fresh /health s: max {max(took):.3f}; closed by feedd: {counts}")
    assert max(took) < ANSWER_S, took
    # feedd closed attackers' connections (evicted idle ones, cut unfinished headers).
    assert sum(counts.values()) >= total, counts
    assert "refusing new connections" in feedd.log_text() or counts


async def test_slow_bodies_from_four_addresses_block_nobody(tmp_path: Path) -> None:
    _sim, _feedd, counts, took, _start, _end = await run_attack(
        tmp_path, "slowbodies", 8, fd_limit=False
    )
    print(f"fresh /health s: max {max(took):.3f}; slow bodies answered: {counts}")
    assert max(took) < ANSWER_S, took
    assert counts.get("408", 0) >= 8, counts  # every slow sender lost its connection
