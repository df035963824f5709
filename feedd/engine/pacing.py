"""A token bucket that spaces actions to a rate: client frames, connects, REST weight."""

from __future__ import annotations

import trio


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
            now = trio.current_time()
            if self._stamp is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < units:
                wait = (units - self._tokens) / self.rate
                await trio.sleep(wait)
                self._tokens = units
                self._stamp = trio.current_time()
            self._tokens -= units

    def pause_until(self, deadline: float) -> None:
        """Spend the bucket so that nothing passes before ``deadline`` (trio time)."""
        now = trio.current_time()
        self._tokens = min(0.0, self._tokens) - max(0.0, deadline - now) * self.rate
        self._stamp = now
