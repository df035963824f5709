"""Simulated exchange time: a fixed start that runs ``speed`` times faster than trio's clock.

Everything in the simulator reads time from here, so tests under trio's MockClock (autojump)
see minutes pass in no real time, and a demo at speed 60 sees a minute per second.
"""

from __future__ import annotations

import math
import time

import trio

#: 2026-03-02 14:30:00 UTC, the time of PROTOCOLS.md's sample frames; minute and hour aligned.
DEFAULT_START_MS = 1_772_461_800_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimClock:
    """Sim time = ``start_ms`` + elapsed trio seconds x 1000 x ``speed``.

    Must be created inside ``trio.run`` (it reads ``trio.current_time()`` as its origin).
    """

    def __init__(self, start_ms: int, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start_ms = start_ms
        self.speed = speed
        self.t0 = trio.current_time()

    def now_ms(self) -> int:
        return self.start_ms + math.floor((trio.current_time() - self.t0) * 1000.0 * self.speed)

    def trio_time_at(self, sim_ms: int) -> float:
        """The trio time at which ``now_ms()`` reaches ``sim_ms`` (rounded up, never early)."""
        return self.t0 + (sim_ms - self.start_ms) / (1000.0 * self.speed) + 1e-9

    def real_seconds(self, sim_ms: int) -> float:
        """How many trio seconds a span of ``sim_ms`` sim milliseconds lasts."""
        return sim_ms / (1000.0 * self.speed)

    async def sleep_until_ms(self, sim_ms: int) -> None:
        # Float rounding can wake us a hair early; loop until the sim clock agrees.
        while self.now_ms() < sim_ms:  # noqa: ASYNC110 - nothing to wait on but the clock
            await trio.sleep_until(max(self.trio_time_at(sim_ms), trio.current_time() + 1e-9))
