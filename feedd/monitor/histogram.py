"""A cumulative-bucket histogram of durations, kept by the code that measures them and
exported by ``/metrics`` as a Prometheus histogram (no dependency on the client library)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

#: seconds: a commit of a few candles takes ~1 ms, a batch of thousands tens of ms, and a
#: disk or lock in trouble seconds; 30 s is past the writer's retry ceiling
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Histogram:
    """Counts of observations per bucket (upper bounds, ``+Inf`` implied), their sum and
    count. Observed on the event loop and read there too, so no lock."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing and not empty")
        self.bounds = tuple(float(b) for b in bounds)
        #: observations per bucket (not cumulative); the last one is +Inf
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal")
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, ending with ``(inf, count)``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out
