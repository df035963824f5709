"""Coverage runs on PostgreSQL: the closed candles of a batch merged into ``runs`` in a few
round trips for the whole batch, whatever the number of series: one that extends the runs that
live candles continue (nearly every series of a live batch), then, for the rest, three (read
the touching runs, delete them, insert the merged ones). Same meaning as
feedd/store/coverage.py; the caller holds the series' rows locked, so two writers never merge
one series' runs at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from feedd.intervals import next_open
from feedd.store.coverage import previous_open, segments
from feedd.store.postgres.connection import Connection, int_array

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


#: the common case of a live batch, in one round trip: a series' new closed candles are one
#: stretch that continues the run ending just before it, with no run touching it on the right;
#: that run is extended. Returns the series done; the others take the general path.
_EXTEND = """
UPDATE runs SET "end" = u.e
FROM unnest(%s::integer[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
    AS u(series, prev, s, e, hi)
WHERE runs.series = u.series AND runs."end" = u.prev
    AND NOT EXISTS (SELECT FROM runs r
        WHERE r.series = u.series AND r."end" >= u.s AND r.start <= u.hi)
RETURNING runs.series
"""


def add_closed(
    conn: Connection, closed: Mapping[int, Sequence[int]], intervals: Mapping[int, str]
) -> None:
    """Record closed candles stored at ``closed[series]`` open times. Part of the caller's
    transaction."""
    if not closed:
        return
    new: dict[int, list[Run]] = {}
    for sid in sorted(closed):
        new[sid] = list(segments(intervals[sid], closed[sid]))
    single = [sid for sid, runs in new.items() if len(runs) == 1]
    if single:
        done = _extend(conn, single, new, intervals)
        new = {sid: runs for sid, runs in new.items() if sid not in done}
    if new:
        _merge_general(conn, new, intervals)


def _extend(
    conn: Connection, ids: list[int], new: Mapping[int, list[Run]], intervals: Mapping[int, str]
) -> set[int]:
    """Extend each series' run that ends right before its one new stretch; the series done."""
    prev, starts, ends, highs = [], [], [], []
    for sid in ids:
        interval, (start, end) = intervals[sid], new[sid][0]
        prev.append(previous_open(interval, start))
        starts.append(start)
        ends.append(end)
        highs.append(next_open(interval, end))
    arrays = tuple(map(int_array, (ids, prev, starts, ends, highs)))
    return {row[0] for row in conn.execute(_EXTEND, arrays)}


def _merge_general(
    conn: Connection, new: Mapping[int, list[Run]], intervals: Mapping[int, str]
) -> None:
    """Any batch: read the runs touching the new stretches, delete them, insert the merged."""
    ids, lows, highs = [], [], []
    for sid in sorted(new):
        interval = intervals[sid]
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
        (int_array(ids), int_array(lows), int_array(highs)),
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
            (int_array(s for s, _ in gone), int_array(e for _, e in gone)),
        )
    if added:
        conn.execute(
            'INSERT INTO runs (series, start, "end")'
            " SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::bigint[])",
            (
                int_array(s for s, _, _ in added),
                int_array(a for _, a, _ in added),
                int_array(b for _, _, b in added),
            ),
        )


def trim(conn: Connection, series: int, interval: str, cutoff: int) -> None:
    """Candles opening at or before ``cutoff`` were deleted (retention)."""
    conn.execute('DELETE FROM runs WHERE series = %s AND "end" <= %s', (series, cutoff))
    conn.execute(
        "UPDATE runs SET start = %s WHERE series = %s AND start <= %s",
        (next_open(interval, cutoff), series, cutoff),
    )
