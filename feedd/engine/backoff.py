"""Capped exponential backoff with full jitter that resets only after sustained health.

A connection that connects and dies at once must not retry at full speed forever, so merely
connecting does not reset the delay: only a connection that stayed healthy for
``healthy_after`` seconds does.
"""

from __future__ import annotations

import random

import attrs


@attrs.define(eq=False)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    healthy_after: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random)
    _attempt: int = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; grows until ``maximum``, jittered."""
        ceiling = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt = min(self._attempt + 1, 64)
        # Full jitter keeps many reconnecting shards from hitting the venue in lockstep; the
        # floor of half the ceiling keeps a flapping link from retrying at zero delay.
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def connection_lasted(self, seconds: float) -> None:
        """Report how long the last connection was healthy; resets once it was long enough."""
        if seconds >= self.healthy_after:
            self._attempt = 0
