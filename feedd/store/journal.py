"""Where each row goes: the series-major ``candle_rows`` or a time-major journal (#17).

``candle_rows`` is keyed by (series, open time), so a commit of live rows lands on as many
pages as it has series: 100 rows over 600 series dirtied ~100 pages of 4 KiB, which the
commit wrote to the WAL. A live row that is the newest of its series goes instead to a
journal keyed by (open time, series), whose pages fill at its end. Every ``JOURNAL_ROWS``
new keys the active journal becomes the draining one, and its rows move into ``candle_rows``
in key order, whole, so the move touches each series' newest page once. The move runs in
the writer's upkeep, a transaction of its own right after the commit that filled the journal
(``Database.upkeep``); a write that finds a journal draining moves it too. The emptied
journal is cleared in the same transaction by a ``DELETE`` without ``WHERE``, which SQLite
does by freeing its pages.

Readers see the three tables through the view ``candles``. ``journal_state`` keeps, per
journal, the open time up to which its rows have moved (``hide``), and the view hides those:
feedd once moved a journal in slices over several commits, and a file it left half moved
still reads right and finishes the move.

Each key is in exactly one place. The router keeps, per series, the open times of its rows
in each journal (first and last), and decides from them alone, without a query:

- the draining journal's span of a series (the rows up to ``hide``, if any, have moved);
- the active journal's keys of a series are all newer than its draining span;
- a series with no journal rows starts in the active journal with a live row newer than any
  of its stored rows; anything else goes to ``candle_rows``, where older rows are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from feedd.store.schema import (
    ALL_COLUMNS,
    FLAG_ARCHIVE,
    FLAG_REST,
    JOURNALS,
    NO_HIDE,
    upsert_rule,
)

#: new keys in the active journal before it is drained. Readers scan a journal's open times
#: for a series' rows: 16,000 journal rows over 600 series took a 1,000-row read from 0.31 to
#: 1.07 ms, 4,000 to 0.52. The writer thread at 2,000/s spent 11.5-13.5 us per row with
#: 8,000, 12.0 with 20,000 (15.5-19 without a journal), both moving 2,000 rows a write.
JOURNAL_ROWS = 8_000
#: flag bits of a row that did not come from a live WebSocket frame
NOT_LIVE = FLAG_REST | FLAG_ARCHIVE


#: (first, last) open time of a series' rows in one journal
Span = list[int]


def move_sql(journal: str) -> str:
    """Move a journal's rows of open times in (?1, ?2] into ``candle_rows``, in its key order.

    A key is never in both (see the router), but a row that somehow is keeps the upsert rule.
    """
    return (
        f"INSERT INTO candle_rows ({ALL_COLUMNS}) SELECT {ALL_COLUMNS} FROM {journal}"
        " WHERE open_time > ?1 AND open_time <= ?2 ORDER BY series, open_time "
        + upsert_rule("candle_rows")
    )


class Router:
    """The journals' state as the writer's connection last saw it; part of its transactions.

    Any change is made inside the caller's transaction; after a rollback, or when another
    connection wrote to the file (``PRAGMA data_version``), the state is read again.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._loaded = False
        self._data_version: int | None = None
        #: index in JOURNALS of the journal new keys go to
        self.active = 0
        #: open times up to this have moved out of the draining journal (only in a file
        #: left half moved by a feedd that moved journals in slices)
        self.hide = NO_HIDE
        #: per series, its span in the draining journal (before any move)
        self._draining: dict[int, Span] = {}
        #: per series, its span in the active journal
        self._active: dict[int, Span] = {}
        #: new keys written to the active journal
        self.active_rows = 0
        #: per series without journal rows, its newest open time in ``candle_rows``
        self._top: dict[int, int | None] = {}

    def forget(self) -> None:
        """Read the state again before the next use (after a rollback, a wipe, a prune)."""
        self._loaded = False

    def check(self) -> bool:
        """At the start of each transaction: another connection's commit voids the state.
        True when another connection wrote since the last check (the caller's own caches of
        the file are void too)."""
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        other = version != self._data_version
        if other:
            self._data_version = version
            self._loaded = False
        if not self._loaded:
            self._load()
        return other

    def _load(self) -> None:
        active, hide0, hide1 = self._conn.execute(
            "SELECT active, hide0, hide1 FROM journal_state"
        ).fetchone()
        self.active = int(active)
        self.hide = int((hide0, hide1)[1 - self.active])
        self._draining = self._spans(JOURNALS[1 - self.active])
        self._active = self._spans(JOURNALS[self.active])
        (self.active_rows,) = self._conn.execute(
            f"SELECT count(*) FROM {JOURNALS[self.active]}"
        ).fetchone()
        self._top = {}
        self._loaded = True

    def _spans(self, journal: str) -> dict[int, Span]:
        rows = self._conn.execute(
            f"SELECT series, min(open_time), max(open_time) FROM {journal} GROUP BY series"
        )
        return {sid: [first, last] for sid, first, last in rows}

    def span(self, sid: int) -> tuple[int, int] | None:
        """First and last open time of the series' rows in the journals, if any (moved
        rows included: they are in ``candle_rows`` too)."""
        spans = [s for s in (self._draining.get(sid), self._active.get(sid)) if s is not None]
        if not spans:
            return None
        return min(s[0] for s in spans), max(s[1] for s in spans)

    def route(self, rows: Sequence[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """Split rows (series, open time, ..., flags) into those for ``candle_rows``, the
        draining journal and the active journal; the spans take in the new keys."""
        stored: list[Any] = []
        draining: list[Any] = []
        active: list[Any] = []
        spans, hide = self._draining, self.hide
        for row in rows:
            sid, t = row[0], row[1]
            span = spans.get(sid)
            if span is not None:
                if t < span[0]:
                    stored.append(row)
                    continue
                if t <= span[1]:
                    (stored if t <= hide else draining).append(row)
                    continue
            else:
                own = self._active.get(sid)
                if own is None:
                    top = self._newest_stored(sid)
                    if row[9] & NOT_LIVE or (top is not None and t <= top):
                        stored.append(row)
                        if top is None or t > top:
                            self._top[sid] = t  # for the batch's next rows
                        continue
                elif t < own[0]:
                    stored.append(row)
                    continue
            own = self._active.get(sid)
            if own is None:
                self._active[sid] = [t, t]
                self._top.pop(sid, None)
                self.active_rows += 1
            elif t > own[1]:
                own[1] = t
                self.active_rows += 1
            elif t < own[0]:
                own[0] = t
                self.active_rows += 1
            active.append(row)
        return stored, draining, active

    def _newest_stored(self, sid: int) -> int | None:
        """The newest open time of a series without journal rows in ``candle_rows``: read
        once, then kept up to date by ``route``."""
        if sid not in self._top:
            (self._top[sid],) = self._conn.execute(
                "SELECT max(open_time) FROM candle_rows WHERE series = ?", (sid,)
            ).fetchone()
        return self._top[sid]

    @property
    def due(self) -> bool:
        """``step`` has work: a journal drains, or the active one is full."""
        return bool(self._draining) or self.active_rows >= JOURNAL_ROWS

    def step(self) -> None:
        """Part of a write's or an upkeep's transaction: move the draining journal, or make
        the active journal the draining one once it holds ``JOURNAL_ROWS``."""
        if self._draining:
            self._move()
        elif self.active_rows >= JOURNAL_ROWS:
            self._swap()

    def drain(self) -> None:
        """Move every journal row into ``candle_rows`` (a clean close)."""
        if self._draining:
            self._move()
        if self._active:
            self._swap()
            self._move()

    def _move(self) -> None:
        """Move the draining journal into ``candle_rows`` whole, then free its pages.

        Whole, because a move costs per series as well as per row (each series' newest page is
        rewritten): 60,000 rows in 100-row commits over 600 series, moves of 2,000 rows
        against 8,000, 9.7-10.4 -> 8.4-8.5 us per row. And whole, no live commit carries a
        rest: moving 8,000 rows of a journal that a 2,500-row write had filled to ~10,000
        left the rest to the next write's commit, in 5 of 12 moves. Only open times after
        ``hide`` move: a file from a feedd that moved journals in slices may have left one
        half moved.
        """
        journal = JOURNALS[1 - self.active]
        last = max(span[1] for span in self._draining.values())
        self._conn.execute(move_sql(journal), (self.hide, last))
        self._conn.execute(f"DELETE FROM {journal}")
        self._conn.execute(f"UPDATE journal_state SET hide{1 - self.active} = ?", (NO_HIDE,))
        self.hide = NO_HIDE
        self._draining = {}

    def _swap(self) -> None:
        self.active = 1 - self.active
        self._conn.execute("UPDATE journal_state SET active = ?", (self.active,))
        self._draining, self._active = self._active, {}
        self.active_rows = 0
