"""The writer's in-memory state: candles held for a commit, coalesced, and its counters.

Coalescing follows the database's upsert rule, so folding updates never changes the outcome.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs

from feedd.candle import Candle

Key = tuple[str, str, str, int]


def fold(into: dict[Key, Candle], candles: Iterable[Candle]) -> None:
    """Apply ``candles`` (oldest first) on top of ``into``: a closed candle yields only to a
    closed one, anything else takes the newer value."""
    get = into.get
    for candle in candles:
        # Candle.key spelt out: the property call was a third of the fold's time, on the
        # event loop for every candle (tests/test_store_writer.py checks the two agree).
        key = (candle.exchange, candle.symbol, candle.interval, candle.open_time)
        held = get(key)
        if held is None or candle.closed or not held.closed:
            into[key] = candle


class Pending:
    """The writer's receiving buffer; ``take()`` hands the whole batch over and starts anew."""

    def __init__(self) -> None:
        self._items: dict[Key, Candle] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, candles: Iterable[Candle]) -> None:
        fold(self._items, candles)

    def take(self) -> dict[Key, Candle]:
        items, self._items = self._items, {}
        return items

    def clear(self) -> int:
        """Drop everything; returns how many candles were dropped."""
        return len(self.take())


@attrs.frozen
class WriterStats:
    #: candles taken off the channel (before coalescing)
    received: int
    #: candles handed to SQLite in successful commits (after coalescing)
    committed: int
    batches: int
    #: candles held in memory, waiting for (or in) a commit
    pending: int
    #: at this many held candles the writer stops taking more (ingest waits)
    held_limit: int
    last_batch_latency_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    last_error: str | None
    healthy: bool
    #: failed commit attempts since start
    retries: int
    #: candles the codec refused (logged and dropped)
    rejected: int
    #: candles deleted by retention
    pruned: int
    #: committed batches that commit listeners were too full to take
    listener_overflow: int
    #: held candles given up at shutdown because the store could not take them in time
    dropped: int
    #: times the database file was found deleted or replaced and made anew
    recreated: int


@attrs.define(eq=False)
class WriterCounters:
    received: int = 0
    committed: int = 0
    batches: int = 0
    retries: int = 0
    pruned: int = 0
    listener_overflow: int = 0
    dropped: int = 0
    last_error: str | None = None
    healthy: bool = True
    #: seconds per recent commit, for percentiles without keeping the whole history
    latencies: deque[float] = attrs.field(factory=lambda: deque(maxlen=512))

    def snapshot(self, pending: int, rejected: int, held_limit: int, recreated: int) -> WriterStats:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return WriterStats(
            received=self.received,
            committed=self.committed,
            batches=self.batches,
            pending=pending,
            held_limit=held_limit,
            last_batch_latency_ms=self.latencies[-1] * 1000 if self.latencies else None,
            latency_p50_ms=pct(0.50),
            latency_p99_ms=pct(0.99),
            last_error=self.last_error,
            healthy=self.healthy,
            retries=self.retries,
            rejected=rejected,
            pruned=self.pruned,
            listener_overflow=self.listener_overflow,
            dropped=self.dropped,
            recreated=recreated,
        )
