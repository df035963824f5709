"""Benchmark support: a bounded log of when each benchmark frame was sent, and a rate pacer.

Send times are ``time.monotonic()`` seconds (CLOCK_MONOTONIC), taken as the frames are written to
the socket and comparable between processes on one host, so a benchmark can run the simulator
in its own process and still compute frame-to-commit latency from (symbol, open time,
close string) keys.
"""

from __future__ import annotations

from collections import deque

import trio

from feedd.intervals import floor_open, next_open
from feedd.sim.session import Sub

LogRow = tuple[str, int, str, float]


class SendLog:
    """The last ``size`` benchmark frames as (symbol, open_ms, close, monotonic send time)."""

    def __init__(self, size: int) -> None:
        self._rows: deque[LogRow] = deque(maxlen=max(1, size))
        #: absolute index of the next row to be appended
        self.next_index = 0

    def record(self, symbol: str, open_ms: int, close: str, sent: float) -> None:
        self._rows.append((symbol, open_ms, close, sent))
        self.next_index += 1

    def record_all(self, rows: list[tuple[str, int, str]], sent: float) -> None:
        for symbol, open_ms, close in rows:
            self.record(symbol, open_ms, close, sent)

    def since(self, index: int, limit: int = 100_000) -> tuple[int, list[LogRow]]:
        """Rows from absolute ``index`` on (older ones may be evicted) and the next index."""
        first = self.next_index - len(self._rows)
        start = max(index, first)
        rows = [self._rows[i - first] for i in range(start, min(self.next_index, start + limit))]
        return start + len(rows), rows

    def as_dict(self) -> dict[tuple[str, int, str], float]:
        return {(s, o, c): t for s, o, c, t in self._rows}


def bench_open_ms(sub: Sub, now_ms: int, closed: bool) -> int:
    """The open time of a stream's next benchmark frame: the current candle's while frames are
    forming updates; with ``closed``, the candle after the stream's last one (the first is the
    current candle), so each frame closes a new candle and becomes a row of its own."""
    if not closed:
        return floor_open(sub.interval, now_ms)
    if sub.open_ms is None:
        sub.open_ms = floor_open(sub.interval, now_ms)
    else:
        sub.open_ms = next_open(sub.interval, sub.open_ms)
    return sub.open_ms


class Pacer:
    """Hands out ``rate`` updates per second across every task that shares it (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            await trio.lowlevel.checkpoint()
            return
        now = trio.current_time()
        start = max(self._next, now)
        self._next = start + n / self.rate
        if start > now:
            await trio.sleep_until(start)
        else:
            await trio.lowlevel.checkpoint()
