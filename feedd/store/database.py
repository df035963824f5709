"""The synchronous write side of the store: upserts, retention and wipe on one connection.

A Database belongs to the writer thread; nothing here is thread-safe or async.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.intervals import INTERVAL_MS, next_open
from feedd.store import coverage, lease, nodes
from feedd.store.codec import LastPrices, encode, encode_prices
from feedd.store.journal import Router
from feedd.store.retention import Retention, Verdict
from feedd.store.schema import (
    ALL_COLUMNS,
    FLAG_CLOSED,
    HIDDEN_UPTO,
    JOURNALS,
    NO_HIDE,
    SOURCE_FLAGS,
    connect_writer,
    is_writable,
    store_error,
    upsert_rule,
)

log = logging.getLogger("feedd.store")

SeriesKey = tuple[str, str, str]
#: a row's primary key (series, open_time)
_KEY = operator.itemgetter(0, 1)
#: series, open time, the six values, trades, flags
Row = tuple[int, int, int, int, int, int, int, int, int | None, int]
#: (device, inode) of a file
FileIdentity = tuple[int, int]


def _upsert_sql(table: str, rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO {table} ({ALL_COLUMNS}) VALUES {values} {upsert_rule(table)}"


#: rows per statement of a batch's upsert: each executemany step releases and takes back the
#: GIL, and the event loop's thread wants it meanwhile; 64 rows x 10 values stay under the
#: 999 variables older SQLite builds allow. Rows of one statement apply in order, like
#: statements of one row (a key twice in a statement conflicts with its own earlier row).
ROWS_PER_STATEMENT = 64
#: per table, the upsert of one row and of ROWS_PER_STATEMENT rows
_UPSERTS = {
    table: (_upsert_sql(table, 1), _upsert_sql(table, ROWS_PER_STATEMENT))
    for table in ("candle_rows", *JOURNALS)
}


class Database:
    """Owns the read-write connection; every public method is one transaction."""

    read_only_reason = (
        "SQLite could open it only read-only"
        " (file or directory permissions, an immutable file, a read-only mount)"
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        identity: FileIdentity | None = None,
        created: bool = False,
        writable: bool = True,
    ) -> None:
        self._conn = conn
        self.path = path
        #: the file this connection has open, to notice it deleted or replaced under us
        self.identity = identity
        #: the file did not exist before this open (SQLite created it)
        self.created = created
        #: False when SQLite could only open the file read-only
        self.writable = writable
        self._ids: dict[SeriesKey, int] = {}
        self._intervals: dict[int, str] = {}
        #: series written since the last prune
        self._dirty: set[int] = set()
        self._retention = Retention()
        #: candles refused by the codec (logged, never retried)
        self.rejected = 0
        #: the newest coverage run (start, end) of a series, as the open transaction sees it;
        #: dropped wherever runs change otherwise, emptied by a rollback
        self._newest: dict[int, tuple[int, int]] = {}
        #: each live series' last prices, for ``encode_prices``
        self._last_prices: dict[int, LastPrices] = {}
        #: which of ``candle_rows`` and the journals each row goes to
        self._router = Router(conn)

    @classmethod
    def open(cls, path: Path, *, busy_timeout_ms: int = 2000) -> Database:
        """Open (creating the file and schema if missing). A file SQLite could open only
        read-only is returned with ``writable`` False rather than refused: the caller decides
        whether to wait for the operator to fix it."""
        try:
            created = file_identity(path) is None
            conn = connect_writer(path, busy_timeout_ms=busy_timeout_ms)
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot open", path) from exc
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        try:
            writable = is_writable(conn)
            identity = file_identity(path)
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(exc, "cannot open", path) from exc
        return cls(conn, path, identity=identity, created=created, writable=writable)

    def moved(self) -> bool:
        """Whether the path no longer names the file this connection writes (deleted or
        replaced): SQLite would go on committing into the unlinked file. One stat call."""
        try:
            return file_identity(self.path) != self.identity
        except OSError:
            return False  # cannot tell; a failing write will say what is wrong

    @property
    def upkeep_due(self) -> bool:
        """A journal waits to move (``upkeep``)."""
        return self._router.due

    def upkeep(self) -> None:
        """Move what a journal holds into ``candle_rows``, in a transaction of its own.

        A write does it too, at its end, but the writer calls this between two commits as
        soon as it is due: then no live commit carries a move (12-19 ms for a journal of
        8,000 rows over 600 series) and its candles are not kept waiting for it.
        """
        with self._transaction("cannot write to"):
            self._router.step()

    def write(self, candles: Sequence[Candle]) -> int:
        """Upsert ``candles`` in one transaction; returns rows inserted or changed."""
        if not candles:
            return 0
        return self._upsert(candles)

    def _upsert(self, candles: Sequence[Candle], also: Callable[[], object] | None = None) -> int:
        """Upsert ``candles`` and run ``also`` in the same transaction (all or nothing)."""
        new_ids: dict[SeriesKey, int] = {}
        rows: list[Row] = []
        changed = 0
        with self._transaction("cannot write to"):
            if candles:
                rows = self._rows(candles, new_ids)
                # In key order SQLite finds each row's page where the previous one left off:
                # 25-30 % less CPU per row over 600 series than in arrival order. The sort is
                # stable, so updates of one candle still apply in their order.
                rows.sort(key=_KEY)
                changed = self._store(rows)
                self._record_closed(rows)
            if also is not None:
                also()
        # Ids minted inside a rolled-back transaction must not be cached, hence only now.
        self._ids.update(new_ids)
        self._dirty.update(row[0] for row in rows)
        return changed

    def _store(self, rows: list[Row]) -> int:
        """Upsert ``rows`` (in key order) where each belongs, then move on the journals'
        draining; rows changed."""
        router = self._router
        stored, draining, active = router.route(rows)
        changed = 0
        if stored:
            changed += self._execute_upsert("candle_rows", stored)
        if draining:
            changed += self._execute_upsert(JOURNALS[1 - router.active], draining)
        if active:
            changed += self._execute_upsert(JOURNALS[router.active], active)
        router.step()
        return changed

    def _execute_upsert(self, table: str, rows: list[Row]) -> int:
        """Upsert ``rows`` in order, ROWS_PER_STATEMENT to a statement; rows changed."""
        one, many = _UPSERTS[table]
        n = ROWS_PER_STATEMENT
        whole = len(rows) - len(rows) % n
        changed = 0
        if whole:
            flat = itertools.chain.from_iterable
            chunks = [tuple(flat(rows[i : i + n])) for i in range(0, whole, n)]
            changed += self._conn.executemany(many, chunks).rowcount
        if whole < len(rows):
            changed += self._conn.executemany(one, rows[whole:]).rowcount
        return changed

    def _rows(self, candles: Sequence[Candle], new_ids: dict[SeriesKey, int]) -> list[Row]:
        ids, last, ws = self._ids, self._last_prices, Source.WS
        rows = []
        for c in candles:
            key = (c.exchange, c.symbol, c.interval)
            sid = ids.get(key) or new_ids.get(key) or self._mint(key, new_ids)
            flags = (FLAG_CLOSED if c.closed else 0) | SOURCE_FLAGS[c.source]
            try:
                # Live updates repeat their prices; a REST or archive row is another candle.
                if c.source is ws:
                    o, h, low, close = encode_prices(last, sid, c.open, c.high, c.low, c.close)
                else:
                    o, h, low = encode(c.open), encode(c.high), encode(c.low)
                    close = encode(c.close)
                row = (sid, c.open_time, o, h, low, close, encode(c.volume),
                       encode(c.quote_volume), c.trades, flags)  # fmt: skip
            except ValueError as exc:
                self.rejected += 1
                log.warning("dropping candle %s: %s", c.key, exc)
                continue
            rows.append(row)
        return rows

    def _record_closed(self, rows: Sequence[Row]) -> None:
        """Keep the coverage runs in step with the closed candles just stored.

        Nearly always a series' new closed candles continue its newest run (the minute after
        the last one) or are already in it: both are settled against ``_newest``, with one
        UPDATE for every series extended, instead of a query, a delete and an insert each.
        """
        closed: dict[int, list[int]] = {}
        for row in rows:
            if row[9] & FLAG_CLOSED:
                closed.setdefault(row[0], []).append(row[1])
        extend: list[tuple[int, int, int]] = []
        for sid, times in closed.items():
            interval = self._interval(sid)
            run = self._newest.get(sid) or self._newest_run(sid)
            if run is not None:
                first, last = (times[0], times[0]) if len(times) == 1 else (min(times), max(times))
                start, end = run
                if start <= first and last <= end:
                    continue  # stored again: already covered
                if first == next_open(interval, end) and (
                    len(times) == 1 or _consecutive(interval, times)
                ):
                    extend.append((last, sid, end))
                    self._newest[sid] = (start, last)
                    continue
            coverage.add_closed(self._conn, sid, interval, times)
            self._newest.pop(sid, None)
        if extend:
            updated = self._conn.executemany(
                "UPDATE runs SET end = ? WHERE series = ? AND end = ?", extend
            ).rowcount
            if updated != len(extend):
                # Not what we remembered (cannot happen with one writer): redo them the
                # general way, which merges whatever is there.
                self._newest.clear()
                for _, sid, _ in extend:
                    coverage.add_closed(self._conn, sid, self._interval(sid), closed[sid])

    def _newest_run(self, sid: int) -> tuple[int, int] | None:
        row = self._conn.execute(
            "SELECT start, end FROM runs WHERE series = ? ORDER BY end DESC LIMIT 1", (sid,)
        ).fetchone()
        if row is None:
            return None
        self._newest[sid] = run = (row[0], row[1])
        return run

    def _interval(self, sid: int) -> str:
        interval = self._intervals.get(sid)
        if interval is None:
            (interval,) = self._conn.execute(
                "SELECT interval FROM series WHERE id = ?", (sid,)
            ).fetchone()
            self._intervals[sid] = interval
        return interval

    def _mint(self, key: SeriesKey, new_ids: dict[SeriesKey, int]) -> int:
        self._conn.execute(
            "INSERT OR IGNORE INTO series (exchange, symbol, interval) VALUES (?, ?, ?)", key
        )
        (sid,) = self._conn.execute(
            "SELECT id FROM series WHERE exchange = ? AND symbol = ? AND interval = ?", key
        ).fetchone()
        new_ids[key] = sid
        self._intervals[sid] = key[2]
        return int(sid)

    def write_job(self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str) -> int:
        """Upsert ``candles`` and save job ``job_id``'s document in one transaction, so a
        job's saved progress never runs ahead of its stored candles; returns rows changed."""

        def save_job() -> object:
            return self._conn.execute(
                "INSERT INTO jobs (id, created_at, doc) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                (job_id, created_at, doc),
            )

        return self._upsert(candles, save_job)

    def delete_job(self, job_id: str) -> None:
        try:
            self._conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot write to", self.path) from exc

    def record_node(self, node_id: str, doc: str, at_ms: int) -> int:
        try:
            return nodes.record(self._conn, node_id, doc, at_ms)
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot write to", self.path) from exc

    def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> lease.Lease:
        return lease.take(self._conn, self.path, job_id, node_id, ttl_ms)

    def release_job(self, job_id: str, node_id: str) -> None:
        lease.release(self._conn, self.path, job_id, node_id)

    def load_jobs(self) -> list[str]:
        """Every saved job document, oldest first."""
        try:
            rows = self._conn.execute("SELECT doc FROM jobs ORDER BY created_at, id").fetchall()
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot read", self.path) from exc
        return [row[0] for row in rows]

    def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Runs of stored closed candles overlapping [start, end], clipped to it, ascending."""
        try:
            rows = self._conn.execute(
                "SELECT runs.start, runs.end FROM runs JOIN series ON series.id = runs.series"
                " WHERE series.exchange = ? AND series.symbol = ? AND series.interval = ?"
                " AND runs.end >= ? AND runs.start <= ? ORDER BY runs.end",
                (exchange, symbol, interval, start, end),
            ).fetchall()
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot read", self.path) from exc
        return [(max(a, start), min(b, end)) for a, b in rows]

    def prune(self, max_records: int) -> int:
        """Keep the newest ``max_records`` candles of every series written since the last prune
        (0: keep everything)."""
        if not self._dirty or max_records <= 0:
            self._dirty.clear()
            return 0
        deleted = 0
        later: set[int] = set()
        self._retention.start_round()
        with self._transaction("cannot prune"):
            for sid in sorted(self._dirty):
                done = self._prune_series(sid, max_records)
                if done is None:
                    later.add(sid)
                else:
                    deleted += done
        self._dirty = later
        return deleted

    def _prune_series(self, sid: int, max_records: int) -> int | None:
        """Rows deleted from series ``sid``; None: left for the next round (retention.py)."""
        # Two subqueries, not min() and max() in one SELECT: SQLite answers a lone min or max
        # from the index's end, but both together walk the whole series (12.6 ms a prune
        # at 100,000 rows, against 0.01: seconds per prune round with 600 full series).
        first, last = self._conn.execute(
            "SELECT (SELECT min(open_time) FROM candle_rows WHERE series = ?1),"
            " (SELECT max(open_time) FROM candle_rows WHERE series = ?1)",
            (sid,),
        ).fetchone()
        journal = self._router.span(sid)  # the newest rows, mostly
        if journal is not None:
            first = journal[0] if first is None else min(first, journal[0])
            last = journal[1] if last is None else max(last, journal[1])
        if first is None:
            return 0
        # Months count as 28 days, which only overestimates the span's count.
        step = INTERVAL_MS.get(self._intervals.get(sid, ""), 0)
        verdict = self._retention.verdict(sid, first, last, step, max_records)
        if verdict is not Verdict.WALK:
            return None if verdict is Verdict.LATER else 0
        self._retention.walked(sid, last)
        row = self._conn.execute(
            "SELECT open_time FROM candles WHERE series = ?"
            " ORDER BY open_time DESC LIMIT 1 OFFSET ?",
            (sid, max_records),
        ).fetchone()
        if row is None:
            return 0
        deleted = self._conn.execute(
            "DELETE FROM candle_rows WHERE series = ? AND open_time <= ?", (sid, row[0])
        ).rowcount
        if journal is not None and journal[0] <= row[0]:
            # Only when a series keeps fewer rows than the journals hold of it. Rows that
            # moved out of the draining journal go with the others, hidden or not.
            for table, hidden in HIDDEN_UPTO.items():
                deleted += self._conn.execute(
                    f"DELETE FROM {table} WHERE open_time <= ? AND series = ?"
                    f" AND open_time > {hidden}",
                    (row[0], sid),
                ).rowcount
                self._conn.execute(  # moved: counted in candle_rows
                    f"DELETE FROM {table} WHERE open_time <= ? AND series = ?", (row[0], sid)
                )
            self._router.forget()
        coverage.trim(self._conn, sid, self._interval(sid), row[0])
        self._newest.pop(sid, None)
        return deleted

    def wipe(self) -> None:
        """Delete every candle, series and backfill job, then give the space back to the file
        system (the job manager cancels and forgets its jobs first)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM jobs")
                for table in ("candle_rows", *JOURNALS):
                    self._conn.execute(f"DELETE FROM {table}")
                self._conn.execute(
                    "UPDATE journal_state SET active = 0, hide0 = ?1, hide1 = ?1", (NO_HIDE,)
                )
                self._conn.execute("DELETE FROM runs")
                self._conn.execute("DELETE FROM series")
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot wipe", self.path) from exc
        self._ids.clear()
        self._intervals.clear()
        self._dirty.clear()
        self._retention.forget()
        self._newest.clear()
        self._router.forget()
        try:
            # Cheap on an empty database; readers keep working through WAL meanwhile.
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("wiped %s but could not shrink it: %s", self.path, exc)

    def checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot checkpoint", self.path) from exc

    def analyze(self) -> None:
        """Gather the planner's statistics (sampled: ``analysis_limit`` keeps it quick on a
        file of millions of rows)."""
        try:
            self._conn.execute("PRAGMA analysis_limit = 1000")
            self._conn.execute("ANALYZE")
        except sqlite3.Error as exc:
            raise store_error(exc, "cannot analyze", self.path) from exc

    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint the WAL into the main file and close (the connection closes even on error).

        ``checkpoint`` False: just close, as after a failure, where a checkpoint would only
        wait out the busy timeout or fail again.
        """
        try:
            if checkpoint:
                self._drain_journals()
                self._conn.execute("PRAGMA optimize")
                self.checkpoint()
        except (StoreError, sqlite3.Error) as exc:
            log.warning("closing %s without a clean checkpoint: %s", self.path, exc)
        finally:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                log.warning("closing %s: %s", self.path, exc)

    def _drain_journals(self) -> None:
        """Move every journalled row into ``candle_rows``: a clean stop leaves the journals
        empty, their pages free for the next rows."""
        with self._transaction("cannot write to"):
            self._router.drain()

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """One write transaction, rolled back on any error (``doing`` names it in a
        ``StoreError``); the journals' state is read again first if another connection wrote,
        and so are the coverage runs remembered."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._router.check():
                    self._newest.clear()
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise store_error(exc, doing, self.path) from exc

    def _rollback(self) -> None:
        self._newest.clear()  # it may hold runs of the transaction undone
        self._router.forget()  # and this the journals' spans
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("rollback failed on %s: %s", self.path, exc)


def _consecutive(interval: str, times: list[int]) -> bool:
    """Whether ``times`` (distinct, any order) are consecutive open times."""
    ordered = sorted(times)
    return all(b == next_open(interval, a) for a, b in itertools.pairwise(ordered))


def file_identity(path: Path) -> FileIdentity | None:
    """(device, inode) of ``path``, None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
