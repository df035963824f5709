"""A token bucket that spaces actions to a rate: client frames, connects, REST weight.

Background work (backfill jobs) draws from the same bucket as urgent work (live heals) but
yields to it: it never waits in the urgent queue, takes nothing while urgent work waits,
and leaves ``reserve`` units in the bucket, so a heal that arrives finds them ready.
"""

from __future__ import annotations

import trio

_EPSILON = 1e-9
#: how long a background waiter sleeps at most before looking again
_BACKGROUND_POLL_S = 0.25


class Pacer:
    """Allows ``rate`` units per second with bursts up to ``burst`` units."""

    def __init__(self, rate: float, burst: float = 1.0, reserve_share: float = 0.25) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst, 1.0)
        #: units background work leaves in the bucket for urgent work
        self.reserve = self.burst * reserve_share
        self._tokens = self.burst
        self._stamp: float | None = None
        self._lock = trio.Lock()
        #: urgent acquires waiting or in progress
        self._urgent = 0
        self._urgent_done = trio.Event()

    async def acquire(self, units: float = 1.0) -> None:
        """Wait until ``units`` may be spent, then spend them (FIFO among waiters)."""
        self._urgent += 1
        try:
            async with self._lock:
                self._refill()
                # A loop, not one sleep: a pause may arrive while we wait. The epsilon keeps
                # float rounding of the refill from asking for sleeps too short to advance time.
                while self._tokens < units - _EPSILON:
                    await trio.sleep((units - self._tokens) / self.rate)
                    self._refill()
                self._tokens -= units
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._urgent_done.set()
                self._urgent_done = trio.Event()

    async def acquire_background(self, units: float = 1.0) -> None:
        """Spend ``units`` once no urgent acquire waits and ``reserve`` units stay behind.

        ``units`` above ``burst - reserve`` are clipped to it (else it could never pass)."""
        units = min(units, self.burst - self.reserve)
        while True:
            while self._urgent:
                await self._urgent_done.wait()
            self._refill()
            short = units + self.reserve - self._tokens
            if short <= _EPSILON:
                self._tokens -= units
                return
            # Never sleep holding anything: an urgent acquire may come and go meanwhile.
            await trio.sleep(min(short / self.rate, _BACKGROUND_POLL_S))

    @property
    def urgent_waiting(self) -> int:
        return self._urgent

    def pause_until(self, deadline: float) -> None:
        """Let nothing pass before ``deadline`` (trio time). Pauses do not add up: of two
        overlapping pauses (a 429's Retry-After and a usage warning) the later end wins."""
        self._refill()
        self._tokens = min(self._tokens, -max(0.0, deadline - trio.current_time()) * self.rate)

    def _refill(self) -> None:
        now = trio.current_time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
