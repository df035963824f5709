"""The local wall clock jumps back and forth while the exchanges' clock runs steadily: closed
candles stay correct, because feedd decides closure by exchange time (the closed flag on the
stream, the venue's server time for REST rows) and times its own work on the monotonic clock.

feedd runs in-process with ``time.time``/``time.time_ns`` replaced by a clock the test moves
(trio's clock, and so the simulator's exchange time, is monotonic and does not move). Missed
closes and a reconnect are provoked while the clock is off, so heals run under it too.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from e2e import compare, running_feedd, wait_for_truth

from chaos.harness import VENUES
from feedd.intervals import MINUTE_MS

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PLAN = {name: SYMBOLS for name in VENUES}
HOUR_S = 3600.0
#: where the local clock stands, minute by minute, relative to the true one
JUMPS_S = [-HOUR_S, 24 * HOUR_S, -48 * HOUR_S, -365 * 24 * HOUR_S, 7 * HOUR_S, 0.0]


class JumpingClock:
    def __init__(self) -> None:
        self.offset_s = 0.0
        self._time = time.time
        self._time_ns = time.time_ns

    def time(self) -> float:
        return self._time() + self.offset_s

    def time_ns(self) -> int:
        return self._time_ns() + int(self.offset_s * 1e9)


async def test_wall_clock_jumps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = JumpingClock()
    monkeypatch.setattr(time, "time", clock.time)
    monkeypatch.setattr(time, "time_ns", clock.time_ns)
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=5) as (sim, service, client):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        minute = start
        seen = []
        with trio.fail_after(60):
            for n, offset in enumerate(JUMPS_S):
                minute += MINUTE_MS
                await sim.sleep_until_ms(minute + 10_000)
                clock.offset_s = offset
                seen.append((await client.get("/status")).json()["time"])
                for name in VENUES:
                    faults = sim.venues[name].faults
                    faults.skip_final(SYMBOLS[n % 2])  # healed over REST, by server time
                    if n == 3:
                        faults.drop_connections()
                assert (await client.get("/health")).status_code == 200
            end = minute + 2 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            for name in VENUES:
                await wait_for_truth(service, sim, db, name, SYMBOLS, start - 4 * MINUTE_MS, end)
        stats = service.state.supervisor.stats
    for name in VENUES:
        assert compare(sim, db, name, SYMBOLS, start - 4 * MINUTE_MS, end) == [], name
        assert stats[name].gaps_healed >= len(JUMPS_S) - 1, name
        assert stats[name].reconnects >= 1, name
    # The jumps did reach feedd: its own notion of "now" went back and forth.
    assert seen[1] - seen[0] > 20 * HOUR_S * 1000 and seen[3] < seen[0] - 300 * 24 * HOUR_S * 1000
