"""Coverage of every series as runs of consecutive closed candles, kept by the writer.

The table ``runs`` holds, per series, the maximal stretches of open times with a closed
candle stored: a year of 1m candles with three holes is four rows. The writer updates it in
the transaction that stores the candles (a closed candle is never removed except by retention
or a wipe, which update it too), so the holes of 600 series of 100,000 candles are read
without touching a candle. Open times are aligned to their interval, so a run's length
follows from its ends.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs

from feedd.intervals import floor_open, next_open

DDL = """
CREATE TABLE IF NOT EXISTS runs (
    series INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    PRIMARY KEY (series, end)
) WITHOUT ROWID
"""


@attrs.frozen
class Hole:
    """Open times ``start`` .. ``end`` (inclusive) have no closed candle: ``candles`` of them."""

    start: int
    end: int
    candles: int


@attrs.frozen
class SeriesCoverage:
    exchange: str
    symbol: str
    interval: str
    first_open_time: int
    last_open_time: int
    #: closed candles stored
    candles: int
    missing: tuple[Hole, ...]

    @property
    def missing_candles(self) -> int:
        return sum(hole.candles for hole in self.missing)


def previous_open(interval: str, open_ms: int) -> int:
    return floor_open(interval, open_ms - 1)


def count(interval: str, start: int, end: int) -> int:
    """Candles opening at ``start`` .. ``end`` inclusive (aligned open times)."""
    if interval == "1M":
        first, last = _month_index(start), _month_index(end)
        return last - first + 1
    step = next_open(interval, start) - start
    return (end - start) // step + 1


def _month_index(open_ms: int) -> int:
    d = dt.datetime.fromtimestamp(open_ms / 1000, tz=dt.UTC)
    return d.year * 12 + d.month - 1


def segments(interval: str, open_times: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Maximal stretches of consecutive open times among ``open_times`` (any order)."""
    ordered = sorted(set(open_times))
    if not ordered:
        return
    start = end = ordered[0]
    for t in ordered[1:]:
        if t == next_open(interval, end):
            end = t
        else:
            yield start, end
            start = end = t
    yield start, end


def add_closed(conn: sqlite3.Connection, series: int, interval: str, times: Iterable[int]) -> None:
    """Record that closed candles are stored at ``times``: merge them into the series' runs.
    Part of the caller's transaction."""
    for start, end in segments(interval, times):
        low, high = previous_open(interval, start), next_open(interval, end)
        # Runs are disjoint, so ordered by end their starts ascend too: the ones touching
        # [start, end] (or adjacent to it) come first among those ending at or after ``low``.
        touching = []
        for run_start, run_end in conn.execute(
            "SELECT start, end FROM runs WHERE series = ? AND end >= ? ORDER BY end",
            (series, low),
        ):
            if run_start > high:
                break
            touching.append((run_start, run_end))
        if len(touching) == 1 and touching[0][0] <= start and touching[0][1] >= end:
            continue  # already covered: a re-stored candle
        merged_start = min([start, *(s for s, _ in touching)])
        merged_end = max([end, *(e for _, e in touching)])
        conn.executemany(
            "DELETE FROM runs WHERE series = ? AND end = ?", [(series, e) for _, e in touching]
        )
        conn.execute(
            "INSERT INTO runs (series, start, end) VALUES (?, ?, ?)",
            (series, merged_start, merged_end),
        )


def trim(conn: sqlite3.Connection, series: int, interval: str, cutoff: int) -> None:
    """Candles opening at or before ``cutoff`` were deleted (retention)."""
    conn.execute("DELETE FROM runs WHERE series = ? AND end <= ?", (series, cutoff))
    conn.execute(
        "UPDATE runs SET start = ? WHERE series = ? AND start <= ?",
        (next_open(interval, cutoff), series, cutoff),
    )


def rebuild(conn: sqlite3.Connection) -> int:
    """Fill ``runs`` from every stored closed candle (once, for a database made before runs
    were kept). Returns the candles read. Part of the caller's transaction."""
    conn.execute("DELETE FROM runs")
    intervals = dict(conn.execute("SELECT id, interval FROM series").fetchall())
    read = 0
    cursor = conn.execute(
        "SELECT series, open_time FROM candles WHERE flags & 1 ORDER BY series, open_time"
    )
    current: int | None = None
    times: list[int] = []
    for series, open_time in cursor:
        read += 1
        if series != current:
            if current is not None:
                _insert_runs(conn, current, intervals[current], times)
            current, times = series, []
        times.append(open_time)
    if current is not None:
        _insert_runs(conn, current, intervals[current], times)
    return read


def _insert_runs(conn: sqlite3.Connection, series: int, interval: str, times: list[int]) -> None:
    conn.executemany(
        "INSERT INTO runs (series, start, end) VALUES (?, ?, ?)",
        [(series, start, end) for start, end in segments(interval, times)],
    )


def read(
    conn: Any,
    exchange: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    *,
    placeholder: str = "?",
    by_name: str = "series.exchange, series.symbol, series.interval",
) -> list[SeriesCoverage]:
    """Coverage of every series matching the filters, ordered by exchange, symbol, interval
    (``by_name``: that order in the backend's SQL). Any DB-API connection: the SQL is the
    same on SQLite and PostgreSQL but for ``placeholder``."""
    where, args = [], []
    for column, value in (("exchange", exchange), ("symbol", symbol), ("interval", interval)):
        if value is not None:
            where.append(f"series.{column} = {placeholder}")
            args.append(value)
    rows = conn.execute(
        'SELECT series.exchange, series.symbol, series.interval, runs.start, runs."end"'
        " FROM runs JOIN series ON series.id = runs.series"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f' ORDER BY {by_name}, runs."end"',
        args,
    ).fetchall()
    out: list[SeriesCoverage] = []
    group: list[Sequence[int]] = []
    names: tuple[str, str, str] | None = None
    for ex, sym, iv, start, end in rows:
        if names is not None and (ex, sym, iv) != names:
            out.append(_coverage(names, group))
            group = []
        names = (ex, sym, iv)
        group.append((start, end))
    if names is not None:
        out.append(_coverage(names, group))
    return out


def _coverage(names: tuple[str, str, str], runs: list[Sequence[int]]) -> SeriesCoverage:
    interval = names[2]
    holes = []
    for (_, before_end), (after_start, _) in itertools.pairwise(runs):
        start, end = next_open(interval, before_end), previous_open(interval, after_start)
        holes.append(Hole(start, end, count(interval, start, end)))
    stored = sum(count(interval, start, end) for start, end in runs)
    return SeriesCoverage(*names, runs[0][0], runs[-1][1], stored, tuple(holes))
