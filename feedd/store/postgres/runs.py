"""Coverage runs on PostgreSQL: the closed candles of a batch merged into ``runs`` with three
round trips for the whole batch (read the touching runs, delete them, insert the merged ones),
whatever the number of series. Same meaning as feedd/store/coverage.py; the caller holds the
series' rows locked, so two writers never merge one series' runs at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from feedd.intervals import next_open
from feedd.store.coverage import previous_open, segments
from feedd.store.postgres.connection import Connection

Run = tuple[int, int]


def merge(interval: str, runs: Sequence[Run], new: Sequence[Run]) -> list[Run]:
    """``runs`` and ``new`` as maximal runs: overlapping or adjacent ones joined."""
    out: list[Run] = []
    for start, end in sorted([*runs, *new]):
        if out and start <= next_open(interval, out[-1][1]):
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def add_closed(
    conn: Connection, closed: Mapping[int, Sequence[int]], intervals: Mapping[int, str]
) -> None:
    """Record closed candles stored at ``closed[series]`` open times. Part of the caller's
    transaction."""
    if not closed:
        return
    new: dict[int, list[Run]] = {}
    ids, lows, highs = [], [], []
    for sid in sorted(closed):
        interval = intervals[sid]
        new[sid] = list(segments(interval, closed[sid]))
        ids.append(sid)
        lows.append(previous_open(interval, new[sid][0][0]))
        highs.append(next_open(interval, new[sid][-1][1]))
    # Every run that overlaps or touches a new segment lies within [low, high]; one outside
    # cannot join anything, since stored runs are already maximal.
    existing: dict[int, list[Run]] = {sid: [] for sid in ids}
    for sid, start, end in conn.execute(
        'SELECT runs.series, runs.start, runs."end" FROM runs'
        " JOIN unnest(%s::integer[], %s::bigint[], %s::bigint[]) AS q(series, low, high)"
        ' ON runs.series = q.series AND runs."end" >= q.low AND runs.start <= q.high',
        (ids, lows, highs),
    ):
        existing[sid].append((start, end))
    gone: list[tuple[int, int]] = []
    added: list[tuple[int, int, int]] = []
    for sid in ids:
        old = sorted(existing[sid])
        merged = merge(intervals[sid], old, new[sid])
        if merged == old:
            continue  # already covered: candles stored again
        gone.extend((sid, end) for _, end in old)
        added.extend((sid, start, end) for start, end in merged)
    if gone:
        conn.execute(
            "DELETE FROM runs USING unnest(%s::integer[], %s::bigint[]) AS d(series, e)"
            ' WHERE runs.series = d.series AND runs."end" = d.e',
            ([s for s, _ in gone], [e for _, e in gone]),
        )
    if added:
        conn.execute(
            'INSERT INTO runs (series, start, "end")'
            " SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::bigint[])",
            ([s for s, _, _ in added], [a for _, a, _ in added], [b for _, _, b in added]),
        )


def trim(conn: Connection, series: int, interval: str, cutoff: int) -> None:
    """Candles opening at or before ``cutoff`` were deleted (retention)."""
    conn.execute('DELETE FROM runs WHERE series = %s AND "end" <= %s', (series, cutoff))
    conn.execute(
        "UPDATE runs SET start = %s WHERE series = %s AND start <= %s",
        (next_open(interval, cutoff), series, cutoff),
    )
