"""The writer thread's PostgreSQL connection: batched upserts, retention, jobs and wipe.

Same semantics as feedd/store/database.py. A batch is COPYed into a temporary staging table
and upserted by one ``INSERT ... ON CONFLICT`` in key order; several collectors may write the
same series at once: each transaction first locks its series' rows in id order, so they take
turns per series and never deadlock, and a closed candle only yields to another closed one.
Nothing here is thread-safe or async.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence

import psycopg

from feedd.candle import Candle
from feedd.intervals import INTERVAL_MS
from feedd.store.lease import Lease
from feedd.store.postgres import lease, nodes, rollup, runs
from feedd.store.postgres.connection import (
    Connection,
    connect,
    int_array,
    location,
    store_error,
)
from feedd.store.postgres.schema import is_read_only, migrate, read_store_id
from feedd.store.retention import Retention, Verdict
from feedd.store.schema import FLAG_CLOSED, SOURCE_FLAGS

log = logging.getLogger("feedd.store")

SeriesKey = tuple[str, str, str]
#: series key, open time, the six values (decimal text), trades, flags
Staged = tuple[SeriesKey, int, str, str, str, str, str, str, int | None, int]

#: a plain decimal (ASCII digits: ``\d`` would take other scripts' digits, numeric would not)
_PLAIN_TEXT = r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_DECIMAL = re.compile(_PLAIN_TEXT)
#: a candle's six values joined by spaces, all plain (one regex call per candle)
_SIX_PLAIN = re.compile(" ".join([_PLAIN_TEXT] * 6))
#: numeric's own limits: digits before and after the point
_MAX_INTEGER_DIGITS, _MAX_DECIMALS = 131072, 16383
_BIGINT = 1 << 63
#: how often the cached database size is refreshed (pg_database_size stats every file)
SIZE_EVERY_S = 60.0

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS feedd_stage (
    series integer, open_time bigint, open numeric, high numeric, low numeric,
    close numeric, volume numeric, quote_volume numeric, trades bigint, flags smallint
) ON COMMIT DELETE ROWS
"""
_COLUMNS = "series, open_time, open, high, low, close, volume, quote_volume, trades, flags"
_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "flags")
_VALUES_OF_C = ", ".join(f"c.{v}" for v in _VALUES)
_VALUES_OF_EXCLUDED = ", ".join(f"excluded.{v}" for v in _VALUES)
# A closed row only yields to another closed row: a late forming update (a WS frame racing a
# REST backfill, or a second collector a frame behind) must never reopen a finished candle.
# A row that would not change (the other collector stored the same candle) is left alone: no
# new row version, no WAL. Compared as text, since numeric 1.5 = 1.50 but the text differs.
_UPSERT = f"""
INSERT INTO candles AS c ({_COLUMNS})
SELECT {_COLUMNS} FROM feedd_stage ORDER BY series, open_time
ON CONFLICT (series, open_time) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, quote_volume = excluded.quote_volume, trades = excluded.trades,
    flags = excluded.flags
WHERE ((c.flags & 1) = 0 OR (excluded.flags & 1) = 1)
    AND ({_VALUES_OF_C})::text IS DISTINCT FROM ({_VALUES_OF_EXCLUDED})::text
"""
_MINT = """
INSERT INTO series (exchange, symbol, "interval")
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) AS k ORDER BY 1, 2, 3
ON CONFLICT DO NOTHING
"""
# Resolving by name (not a cached id) each batch: another node's wipe may have deleted a
# series; ids are never reused (the identity is not restarted), so a stale id cannot alias.
_LOCK = """
SELECT series.id, series.exchange, series.symbol, series."interval"
FROM series JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(exchange, symbol, iv)
    ON series.exchange = k.exchange AND series.symbol = k.symbol AND series."interval" = k.iv
ORDER BY series.id FOR NO KEY UPDATE OF series
"""


#: the tables a bulk load fills (ANALYZEd by ``analyze``)
ANALYZED = ("series", "candles", "runs", "candle_hours", "jobs")


class PgWriteConnection:
    """Owns one autocommit connection; every public method is one transaction."""

    read_only_reason = (
        "the PostgreSQL server accepts only reads (a hot standby, or"
        " default_transaction_read_only is on): point the DSN at the primary"
    )

    def __init__(
        self,
        conn: Connection,
        dsn: str,
        *,
        identity: str | None,
        created: bool,
        writable: bool,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        self._conn = conn
        self._dsn = dsn
        self.location = location(dsn)
        self.identity = identity
        self.created = created
        self.writable = writable
        self.rejected = 0
        self._on_size = on_size
        self._size_at = -float("inf")
        #: ids of the series this connection has locked: a batch of only these skips the mint
        #: statement and locks by id (an id whose mint was rolled back, or that another node
        #: wiped, is found missing then and made again)
        self._ids: dict[SeriesKey, int] = {}
        self._intervals: dict[int, str] = {}
        #: series written since the last prune
        self._dirty: set[int] = set()
        self._retention = Retention()

    @classmethod
    def open(cls, dsn: str, *, on_size: Callable[[int], None] | None = None) -> PgWriteConnection:
        """Connect, then create or migrate the schema. A read-only server (a standby) gives a
        connection with ``writable`` False rather than an error: the caller decides."""
        conn = connect(dsn, application_name="feedd-writer")
        try:
            if is_read_only(conn):
                return cls(conn, dsn, identity=read_store_id(conn), created=False, writable=False)
            identity, created = migrate(conn)
            conn.execute(_STAGE)
        except psycopg.Error as exc:
            conn.close()
            raise store_error(exc, "cannot open", dsn) from None
        except BaseException:
            conn.close()
            raise
        out = cls(conn, dsn, identity=identity, created=created, writable=True, on_size=on_size)
        out._refresh_size()
        return out

    def moved(self) -> bool:
        """A recreated database is caught at the reopen (its store id); nothing cheaper."""
        return False

    # -- writes -------------------------------------------------------------------------------

    def write(self, candles: Sequence[Candle]) -> int:
        """Upsert ``candles`` in one transaction; returns rows inserted or changed (a row
        rewritten with identical values is not changed here; SQLite counts it)."""
        if not candles:
            return 0
        return self._upsert(candles)

    @property
    def upkeep_due(self) -> bool:
        """Never: PostgreSQL's own vacuum does the tidying, apart from the writer."""
        return False

    def upkeep(self) -> None:
        """Nothing to do (``upkeep_due`` is never true)."""

    def write_job(self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str) -> int:
        """Upsert ``candles`` and save job ``job_id``'s document in one transaction."""

        def save_job() -> None:
            self._conn.execute(
                "INSERT INTO jobs (id, created_at, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                (job_id, created_at, doc),
            )

        return self._upsert(candles, save_job)

    def _upsert(self, candles: Sequence[Candle], also: Callable[[], None] | None = None) -> int:
        staged = self._stage(candles)
        keys = sorted({row[0] for row in staged})
        changed = 0
        ids: dict[SeriesKey, int] = {}
        try:
            with self._conn.transaction():
                if keys:
                    ids = self._lock_series(keys)
                    changed = self._copy_and_upsert(staged, ids)
                if also is not None:
                    also()
        except psycopg.Error as exc:
            raise store_error(exc, "cannot write to", self._dsn) from None
        self._dirty.update(ids.values())
        self._refresh_size()
        return changed

    def _stage(self, candles: Sequence[Candle]) -> list[Staged]:
        """Validated rows, one per key: the last, unless that would reopen a closed one (as
        SQLite's row-by-row upsert would leave it). The server sorts them by key."""
        rows: dict[tuple[str, str, str, int], Staged] = {}
        for c in candles:
            values = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume)
            # one regex over the six joined: the common case, fast; the slow path says why
            joined = " ".join(values)
            if len(joined) > 400 or not _SIX_PLAIN.fullmatch(joined):
                problem = _refusal(values)
                if problem is not None:
                    self.rejected += 1
                    log.warning("dropping candle %s: %s", c.key, problem)
                    continue
            key = (c.exchange, c.symbol, c.interval, c.open_time)
            if (c.trades is not None and not -_BIGINT <= c.trades < _BIGINT) or not (
                -_BIGINT <= c.open_time < _BIGINT
            ):
                self.rejected += 1
                log.warning("dropping candle %s: trade count or open time out of range", key)
                continue
            flags = (FLAG_CLOSED if c.closed else 0) | SOURCE_FLAGS[c.source]
            before = rows.get(key)
            if before is None or not before[9] & FLAG_CLOSED or flags & FLAG_CLOSED:
                rows[key] = (key[:3], c.open_time, *values, c.trades, flags)
        out = list(rows.values())
        for series in {row[0] for row in out} - self._ids.keys():
            if "\x00" in "".join(series):  # text cannot hold NUL: it would fail the batch
                self.rejected += sum(row[0] == series for row in out)
                log.warning("dropping candles of %s: a NUL character in its name", series)
                out = [row for row in out if row[0] != series]
        return out

    def _lock_series(self, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        """The ids of ``keys`` (created where missing), their rows locked in id order."""
        ids = self._lock_known(keys)
        if ids is not None:
            return ids
        new = [key for key in keys if key not in self._ids]
        if new:
            self._mint(new)
        ids = self._lock(keys)
        if len(ids) < len(keys):
            # wiped by another node since we made them: make them again
            missing = [k for k in keys if k not in ids]
            for key in missing:
                self._ids.pop(key, None)
            self._mint(missing)
            ids.update(self._lock(missing))
        return ids

    def _lock_known(self, keys: list[SeriesKey]) -> dict[SeriesKey, int] | None:
        """Lock by id when every series of the batch was seen (nearly every batch): integers
        instead of three text arrays joined on names. None when one is new, or gone (a wipe
        on another node: ids are never reused, so a stale id matches nothing)."""
        wanted: dict[int, SeriesKey] = {}
        for key in keys:
            sid = self._ids.get(key)
            if sid is None:
                return None
            wanted[sid] = key
        locked = {
            row[0]
            for row in self._conn.execute(
                "SELECT id FROM series WHERE id = ANY(%s::integer[]) ORDER BY id FOR NO KEY UPDATE",
                (int_array(sorted(wanted)),),
            )
        }
        if len(locked) < len(wanted):
            for sid in wanted.keys() - locked:
                del self._ids[wanted[sid]]
            return None
        return {key: sid for sid, key in wanted.items()}

    def _mint(self, keys: list[SeriesKey]) -> None:
        self._conn.execute(_MINT, _columns(keys))

    def _lock(self, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        ids = {}
        for sid, exchange, symbol, interval in self._conn.execute(_LOCK, _columns(keys)):
            ids[(exchange, symbol, interval)] = sid
            self._intervals[sid] = interval
        self._ids.update(ids)
        return ids

    def _copy_and_upsert(self, staged: list[Staged], ids: dict[SeriesKey, int]) -> int:
        closed: dict[int, list[int]] = {}
        minutes: list[tuple[int, int]] = []
        with self._conn.cursor() as cur:
            with cur.copy(f"COPY feedd_stage ({_COLUMNS}) FROM STDIN") as copy:
                for row in staged:
                    sid, open_time = ids[row[0]], row[1]
                    copy.write_row((sid, *row[1:]))
                    if row[9] & FLAG_CLOSED:
                        closed.setdefault(sid, []).append(open_time)
                    if row[0][2] == rollup.BASE_INTERVAL:
                        minutes.append((sid, open_time))
            cur.execute(_UPSERT)
            changed = cur.rowcount
        runs.add_closed(self._conn, closed, self._intervals)
        # after the upsert, under the same series locks: a concurrent writer's rows are in
        rollup.refresh(self._conn, minutes)
        return changed

    # -- jobs ---------------------------------------------------------------------------------

    def delete_job(self, job_id: str) -> None:
        try:
            self._conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
        except psycopg.Error as exc:
            raise store_error(exc, "cannot write to", self._dsn) from None

    def record_node(self, node_id: str, doc: str, at_ms: int) -> int:
        return nodes.record(self._conn, self._dsn, node_id, doc, at_ms)

    def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> Lease:
        return lease.take(self._conn, self._dsn, job_id, node_id, ttl_ms)

    def release_job(self, job_id: str, node_id: str) -> None:
        lease.release(self._conn, self._dsn, job_id, node_id)

    def load_jobs(self) -> list[str]:
        """Every saved job document, oldest first."""
        try:
            rows = self._conn.execute("SELECT doc FROM jobs ORDER BY created_at, id").fetchall()
        except psycopg.Error as exc:
            raise store_error(exc, "cannot read", self._dsn) from None
        return [row[0] for row in rows]

    def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Runs of stored closed candles overlapping [start, end], clipped to it, ascending."""
        try:
            rows = self._conn.execute(
                'SELECT runs.start, runs."end" FROM runs JOIN series ON series.id = runs.series'
                ' WHERE series.exchange = %s AND series.symbol = %s AND series."interval" = %s'
                ' AND runs."end" >= %s AND runs.start <= %s ORDER BY runs."end"',
                (exchange, symbol, interval, start, end),
            ).fetchall()
        except psycopg.Error as exc:
            raise store_error(exc, "cannot read", self._dsn) from None
        return [(max(a, start), min(b, end)) for a, b in rows]

    # -- retention and wipe -------------------------------------------------------------------

    def prune(self, max_records: int) -> int:
        """Keep the newest ``max_records`` candles of every series written since the last prune
        (0: keep everything); returns rows deleted."""
        if not self._dirty or max_records <= 0:
            self._dirty.clear()
            return 0
        deleted = 0
        later: set[int] = set()
        self._retention.start_round()
        try:
            with self._conn.transaction():
                # Locked like a write, so retention and another node's runs update take turns.
                spans = self._conn.execute(
                    "SELECT s.id, (SELECT min(open_time) FROM candles WHERE series = s.id),"
                    " (SELECT max(open_time) FROM candles WHERE series = s.id)"
                    " FROM series s WHERE s.id = ANY(%s) ORDER BY s.id FOR NO KEY UPDATE OF s",
                    (sorted(self._dirty),),
                ).fetchall()
                for sid, first, last in spans:
                    done = self._prune_series(sid, first, last, max_records)
                    if done is None:
                        later.add(sid)
                    else:
                        deleted += done
        except psycopg.Error as exc:
            raise store_error(exc, "cannot prune", self._dsn) from None
        self._dirty = later
        return deleted

    def _prune_series(self, sid: int, first: int | None, last: int | None, keep: int) -> int | None:
        """Rows deleted from series ``sid``; None: left for the next round (retention.py)."""
        if first is None or last is None:
            return 0
        interval = self._intervals.get(sid, "")
        step = INTERVAL_MS.get(interval, 0)
        verdict = self._retention.verdict(sid, first, last, step, keep)
        if verdict is not Verdict.WALK:
            return None if verdict is Verdict.LATER else 0
        self._retention.walked(sid, last)
        row = self._conn.execute(
            "SELECT open_time FROM candles WHERE series = %s"
            " ORDER BY open_time DESC LIMIT 1 OFFSET %s",
            (sid, keep),
        ).fetchone()
        if row is None:
            return 0
        cur = self._conn.execute(
            "DELETE FROM candles WHERE series = %s AND open_time <= %s", (sid, row[0])
        )
        if interval:
            runs.trim(self._conn, sid, interval, row[0])
        rollup.prune(self._conn, sid, row[0])  # no rows unless a 1m series: no need to know
        return cur.rowcount

    def wipe(self) -> None:
        """Delete every candle, series, coverage run and backfill job, as on SQLite (the job
        manager cancels and forgets its jobs first)."""
        try:
            with self._conn.transaction():
                # EXCLUSIVE on series first: writers (which lock series rows before anything
                # else) wait for the wipe and it for them, never a deadlock; readers go on.
                self._conn.execute("LOCK TABLE series IN EXCLUSIVE MODE")
                self._conn.execute("DELETE FROM jobs")
                self._conn.execute("DELETE FROM candles")
                rollup.wipe(self._conn)
                self._conn.execute("DELETE FROM runs")
                self._conn.execute("DELETE FROM series")
        except psycopg.Error as exc:
            raise store_error(exc, "cannot wipe", self._dsn) from None
        self._ids.clear()
        self._retention.forget()
        self._intervals.clear()
        self._dirty.clear()
        self._size_at = -float("inf")

    def analyze(self) -> None:
        """ANALYZE feedd's tables (autovacuum would, minutes after a bulk load at best)."""
        try:
            self._conn.execute("ANALYZE " + ", ".join(ANALYZED))
        except psycopg.Error as exc:
            raise store_error(exc, "cannot analyze", self._dsn) from None

    def close(self, *, checkpoint: bool = True) -> None:
        """Close the connection (nothing to checkpoint: the server owns durability)."""
        try:
            self._conn.close()
        except psycopg.Error as exc:
            log.warning("closing %s: %s", self.location, exc)

    def _refresh_size(self) -> None:
        """Cache the database's size for /metrics, at most every ``SIZE_EVERY_S`` (best
        effort: a failure here never fails the write that preceded it)."""
        if self._on_size is None or time.monotonic() - self._size_at < SIZE_EVERY_S:
            return
        self._size_at = time.monotonic()
        try:
            row = self._conn.execute("SELECT pg_database_size(current_database())").fetchone()
        except psycopg.Error as exc:
            log.debug("cannot read the size of %s: %s", self.location, exc)
            return
        if row is not None:
            self._on_size(int(row[0]))


def _columns(keys: Sequence[SeriesKey]) -> tuple[list[str], list[str], list[str]]:
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


def _refusal(values: Sequence[str]) -> str | None:
    """Why PostgreSQL could not store these values (which would fail the whole batch)."""
    for value in values:
        problem = _decimal_refusal(value)
        if problem is not None:
            return problem
    return None


def _decimal_refusal(value: str) -> str | None:
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        return f"not a plain decimal string: {value!r}"
    point = value.find(".")
    sign = value[0] == "-"
    whole = (len(value) if point < 0 else point) - sign
    if whole > _MAX_INTEGER_DIGITS or (point >= 0 and len(value) - point - 1 > _MAX_DECIMALS):
        return f"decimal out of range: {value[:40]!r}..."
    return None
