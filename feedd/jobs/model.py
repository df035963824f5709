"""A backfill job's state: what the API shows (``document``) and what the store keeps
(``record``: the document plus each symbol's cursor, so a restart resumes where it was)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import attrs
import trio

from feedd.intervals import floor_open, next_open
from feedd.store.coverage import count, previous_open

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = frozenset({QUEUED, RUNNING})
#: error strings kept per job (the newest)
MAX_ERRORS = 20
#: seconds of progress the rate is measured over
RATE_WINDOW_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


def first_open(interval: str, since: int) -> int:
    """The first open time at or after ``since``."""
    opened = floor_open(interval, since)
    return opened if opened >= since else next_open(interval, opened)


@attrs.define(eq=False)
class SymbolJob:
    symbol: str
    state: str = QUEUED
    rows_done: int = 0
    #: open times before it are done: stored closed, or confirmed absent at the venue
    cursor: int | None = None
    #: open times in the range the venue has no candle for (not listed yet, outages)
    absent: int = 0


@attrs.define(eq=False)
class Job:
    id: str
    exchange: str
    interval: str
    since: int
    until: int
    #: the last open time wanted: ``until``, or the last closed at creation if sooner
    end: int
    symbols: list[SymbolJob]
    created_at: int
    state: str = QUEUED
    finished_at: int | None = None
    errors: list[str] = attrs.field(factory=list)
    sources: dict[str, int] = attrs.field(factory=lambda: {"rest": 0, "archive": 0})
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: set once the job's task has ended and saved its final state
    ended: trio.Event = attrs.field(factory=trio.Event)
    #: (trio time, rows fetched) samples for the rate
    _samples: deque[tuple[float, int]] = attrs.field(factory=deque)

    @property
    def first(self) -> int:
        return first_open(self.interval, self.since)

    @property
    def span(self) -> int:
        """Open times in the range, per symbol."""
        return count(self.interval, self.first, self.end) if self.first <= self.end else 0

    def expected(self, sym: SymbolJob) -> int:
        return max(0, self.span - sym.absent)

    def error(self, text: str) -> None:
        self.errors.append(text[:300])
        del self.errors[:-MAX_ERRORS]

    def fetched(self, rows: int, source: str) -> None:
        self.sources[source] = self.sources.get(source, 0) + rows
        now = trio.current_time()
        total = sum(self.sources.values())
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()

    def rate(self) -> float:
        if self.state != RUNNING or len(self._samples) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self._samples[0], self._samples[-1]
        now = trio.current_time()
        # Silence since the last sample slows the rate down too (a paused venue).
        elapsed = max(t1, now) - t0
        return (r1 - r0) / elapsed if elapsed > 0 else 0.0

    def document(self) -> dict[str, Any]:
        done = sum(s.rows_done for s in self.symbols)
        expected = sum(self.expected(s) for s in self.symbols)
        rate = self.rate()
        eta = None
        if self.state == RUNNING and rate > 0:
            eta = round(max(0, expected - done) / rate, 1)
        elif self.state == DONE:
            eta = 0.0
        return {
            "id": self.id,
            "exchange": self.exchange,
            "symbols": [s.symbol for s in self.symbols],
            "interval": self.interval,
            "since": self.since,
            "until": self.until,
            "state": self.state,
            "rows_done": done,
            "rows_expected": expected,
            "rate_per_s": round(rate, 1),
            "eta_s": eta,
            "errors": list(self.errors),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "per_symbol": [
                {
                    "symbol": s.symbol,
                    "state": s.state,
                    "rows_done": s.rows_done,
                    "rows_expected": self.expected(s),
                }
                for s in self.symbols
            ],
            "sources": dict(self.sources),
        }

    def record(self) -> dict[str, Any]:
        doc = self.document()
        doc["end"] = self.end
        doc["cursors"] = {s.symbol: [s.cursor, s.absent] for s in self.symbols}
        return doc

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> Job:
        cursors = doc.get("cursors", {})
        symbols = []
        for row in doc["per_symbol"]:
            cursor, absent = cursors.get(row["symbol"], [None, 0])
            symbols.append(SymbolJob(row["symbol"], row["state"], row["rows_done"], cursor, absent))
        return cls(
            id=doc["id"],
            exchange=doc["exchange"],
            interval=doc["interval"],
            since=doc["since"],
            until=doc["until"],
            end=doc["end"],
            symbols=symbols,
            created_at=doc["created_at"],
            state=doc["state"],
            finished_at=doc["finished_at"],
            errors=list(doc.get("errors", [])),
            sources=dict(doc.get("sources", {})),
        )


def last_wanted(interval: str, until: int, at_ms: int) -> int:
    """The newest open time a job created at ``at_ms`` wants: ``until``'s candle, or the
    last one closed by then."""
    return min(floor_open(interval, until), previous_open(interval, floor_open(interval, at_ms)))
