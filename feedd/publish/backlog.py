"""The bounded backlog between the event loop and the publishing thread (a lock, no waiting).

Closed candles queue in commit order and leave only once the broker acknowledged them.
Forming updates keep the newest per series: an older one is dropped (counted), as is one
older than a closed candle of its series, so a consumer never sees a candle go back to forming.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable

from feedd.candle import Candle

SeriesKey = tuple[str, str, str]


class Backlog:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._closed: deque[Candle] = deque()
        self._forming: dict[SeriesKey, Candle] = {}
        #: newest closed open time queued per series (older forming updates are stale)
        self._newest_closed: dict[SeriesKey, int] = {}
        self.dropped_forming = 0
        #: closed candles given up because the backlog was full (the broker was away too long)
        self.dropped_closed = 0

    def __len__(self) -> int:
        return len(self._closed) + len(self._forming)

    @property
    def closed(self) -> int:
        return len(self._closed)

    def add(self, batch: Iterable[Candle]) -> int:
        """Queue a committed batch; returns how many closed candles the limit pushed out."""
        with self._lock:
            closed, forming, newest = self._closed, self._forming, self._newest_closed
            for candle in batch:
                key = (candle.exchange, candle.symbol, candle.interval)
                if candle.closed:
                    closed.append(candle)
                    if newest.get(key, -1) < candle.open_time:
                        newest[key] = candle.open_time
                    queued = forming.get(key)
                    if queued is not None and queued.open_time <= candle.open_time:
                        del forming[key]
                        self.dropped_forming += 1
                elif newest.get(key, -1) >= candle.open_time:
                    self.dropped_forming += 1
                else:
                    if key in forming:
                        self.dropped_forming += 1
                    forming[key] = candle
            over = len(closed) - self.limit
            for _ in range(max(over, 0)):
                closed.popleft()
            if over > 0:
                self.dropped_closed += over
            return max(over, 0)

    def peek(self, count: int) -> tuple[list[Candle], list[Candle]]:
        """The oldest ``count`` closed candles (left queued until ``done``), and the forming
        updates (taken) once no closed candle is left behind the window: forming updates
        go out after the closed candles of their series, never before."""
        with self._lock:
            window = list(itertools.islice(self._closed, count))
            forming: list[Candle] = []
            if len(window) == len(self._closed) and self._forming:
                forming = list(self._forming.values())
                self._forming = {}
            return window, forming

    def done(self, window: list[Candle]) -> None:
        """The broker acknowledged ``window`` (from ``peek``): forget it. Candles the limit
        pushed out meanwhile are not removed twice."""
        with self._lock:
            closed = self._closed
            for candle in window:
                if closed and closed[0] is candle:
                    closed.popleft()

    def drop_forming(self, count: int) -> None:
        with self._lock:
            self.dropped_forming += count
