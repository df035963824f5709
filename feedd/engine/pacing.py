"""A token bucket that spaces actions to a rate: client frames, connects, REST weight."""

from __future__ import annotations

import trio

_EPSILON = 1e-9


class Pacer:
    """Allows ``rate`` units per second with bursts up to ``burst`` units."""

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp: float | None = None
        self._lock = trio.Lock()

    async def acquire(self, units: float = 1.0) -> None:
        """Wait until ``units`` may be spent, then spend them (FIFO among waiters)."""
        async with self._lock:
            self._refill()
            # A loop, not one sleep: a pause may arrive while we wait. The epsilon keeps
            # float rounding of the refill from asking for sleeps too short to advance time.
            while self._tokens < units - _EPSILON:
                await trio.sleep((units - self._tokens) / self.rate)
                self._refill()
            self._tokens -= units

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
