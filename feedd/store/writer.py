"""The async writer: collects candle lists from a channel and commits them in batches.

One collector task keeps receiving while the previous batch commits in the writer thread, so
ingest waits on SQLite only when ``max_held`` candles are held (backpressure).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import attrs
import trio

from feedd.candle import Candle
from feedd.errors import StoreError
from feedd.monitor.histogram import Histogram
from feedd.store.database import Database
from feedd.store.state import Key, Pending, WriterCounters, WriterStats, fold

log = logging.getLogger("feedd.store")

P = ParamSpec("P")
T = TypeVar("T")


@attrs.frozen
class WriterSettings:
    path: Path
    #: commit cadence
    batch_interval_ms: int
    max_records: int
    #: commit sooner when this many distinct candles are pending
    max_batch: int = 5000
    #: while the database fails, hold at most this many candles, then stop receiving
    max_held: int = 200_000
    busy_timeout_ms: int = 2000
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    prune_interval_s: float = 5.0
    #: bound on the best-effort commit when the writer is cancelled
    final_commit_timeout_s: float = 5.0


class Writer:
    def __init__(self, settings: WriterSettings) -> None:
        if not 0 < settings.max_batch <= settings.max_held:
            raise ValueError("need 0 < max_batch <= max_held")
        self.settings = settings
        self._pending = Pending()
        #: the batch being committed (or retried); grows with pending while the DB fails
        self._inflight: dict[Key, Candle] = {}
        self._db: Database | None = None
        # trio's worker threads are pooled; a limiter of one keeps the connection single-user.
        # A dedicated thread hops ~20 µs faster, irrelevant at a few commits per second.
        self._thread = trio.CapacityLimiter(1)
        #: held around every use of the database so wipe() slots in between commits
        self._db_lock = trio.Lock()
        self._counters = WriterCounters()
        #: seconds per successful commit, for /metrics
        self.commit_seconds = Histogram()
        self._listeners: set[trio.MemorySendChannel[Sequence[Candle]]] = set()
        self._wake = trio.Event()
        self._room = trio.Event()
        self._attempted = trio.Event()
        self._eof = False
        self._last_prune = -float("inf")
        self._rng = random.Random()

    @property
    def stats(self) -> WriterStats:
        rejected = self._db.rejected if self._db is not None else 0
        return self._counters.snapshot(self._held, rejected)

    @property
    def _held(self) -> int:
        return len(self._pending) + len(self._inflight)

    async def run(
        self,
        candles_recv: trio.MemoryReceiveChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Commit until every sender has closed, then commit what is held and return.

        A database that cannot be opened fails the start (StoreError) rather than retrying:
        that is a configuration problem the operator must see at once.
        """
        s = self.settings
        self._db = await self._in_thread(Database.open, s.path, busy_timeout_ms=s.busy_timeout_ms)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_collector, candles_recv)
                task_status.started()
                await self._run_commits()
        finally:
            with trio.move_on_after(s.final_commit_timeout_s, shield=True):
                await self._final_flush()
            with trio.CancelScope(shield=True):
                await self._in_thread(self._db.close)
            self._db = None

    async def _run_collector(
        self, candles_recv: trio.MemoryReceiveChannel[Sequence[Candle]]
    ) -> None:
        max_batch, max_held = self.settings.max_batch, self.settings.max_held
        async with candles_recv:
            async for candles in candles_recv:
                # Each receive is a trip through the scheduler; with every venue session
                # sending, one item per trip let the channel back up by hundreds under a
                # busy loop (seconds of latency). Take all that is queued at once.
                while True:
                    self._counters.received += len(candles)
                    self._pending.add(candles)
                    if self._held >= max_held:
                        break
                    try:
                        candles = candles_recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break  # an ended channel ends the loop at the next receive
                if len(self._pending) >= max_batch:
                    self._wake.set()
                while self._held >= max_held:
                    self._room = trio.Event()
                    await self._room.wait()
        self._eof = True
        self._wake.set()

    async def _run_commits(self) -> None:
        interval = self.settings.batch_interval_ms / 1000
        due = trio.current_time() + interval
        while True:
            if not self._eof and len(self._pending) < self.settings.max_batch:
                with trio.move_on_at(due):
                    await self._wake.wait()
            self._wake = trio.Event()
            due = trio.current_time() + interval
            if self._pending:
                await self._commit_held()
            await self._maybe_prune(force=self._eof)
            if self._eof and not self._held:
                return

    async def _commit_held(self) -> None:
        """Commit pending candles, retrying with capped, jittered backoff until it succeeds."""
        fold(self._inflight, self._pending.take().values())
        attempt = 0
        while True:
            try:
                await self._commit_once()
                return
            except StoreError as exc:
                c = self._counters
                c.healthy, c.last_error, c.retries = False, str(exc), c.retries + 1
                self._notify_waiters()
                ceiling = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2**attempt)
                attempt = min(attempt + 1, 30)
                delay = ceiling / 2 + self._rng.random() * ceiling / 2
                log.warning(
                    "commit of %d candles failed (retry %d in %.1fs): %s",
                    self._held,
                    c.retries,
                    delay,
                    exc,
                )
                await trio.sleep(delay)
                # Later arrivals ride along with the retry; folding keeps the newest values.
                fold(self._inflight, self._pending.take().values())

    async def _commit_once(self) -> None:
        db = self._require_db()
        start = trio.current_time()
        async with self._db_lock:
            # Read under the lock: a wipe() that ran while we waited has dropped these.
            candles = list(self._inflight.values())
            await self._in_thread(db.write, candles)
        c = self._counters
        elapsed = trio.current_time() - start
        c.latencies.append(elapsed)
        self.commit_seconds.observe(elapsed)
        if not c.healthy:
            log.info("store healthy again; committed %d held candles", len(candles))
        c.healthy, c.last_error = True, None
        c.committed += len(candles)
        c.batches += 1
        self._inflight = {}
        self._room.set()
        self._publish(candles)

    async def _final_flush(self) -> None:
        if self._db is None:
            return
        fold(self._inflight, self._pending.take().values())
        if not self._inflight:
            return
        try:
            await self._commit_once()
        except StoreError as exc:
            log.error("lost %d uncommitted candles at shutdown: %s", len(self._inflight), exc)

    async def _maybe_prune(self, *, force: bool = False) -> None:
        now = trio.current_time()
        if not force and now - self._last_prune < self.settings.prune_interval_s:
            return
        self._last_prune = now
        db = self._require_db()
        try:
            async with self._db_lock:
                deleted = await self._in_thread(db.prune, self.settings.max_records)
        except StoreError as exc:
            # Retention only trims; a failure loses nothing and the next round retries.
            log.warning("prune failed: %s", exc)
            return
        self._counters.pruned += deleted

    def _publish(self, candles: list[Candle]) -> None:
        for send in self._listeners:
            try:
                send.send_nowait(candles)
            except trio.WouldBlock:
                self._counters.listener_overflow += 1
        self._notify_waiters()

    def _notify_waiters(self) -> None:
        attempted, self._attempted = self._attempted, trio.Event()
        attempted.set()

    @contextmanager
    def open_commit_listener(
        self, max_buffer: int = 1000
    ) -> Iterator[trio.MemoryReceiveChannel[Sequence[Candle]]]:
        """A channel that receives each committed batch; a slow reader loses batches (counted
        in ``stats.listener_overflow``) and never slows the writer."""
        send, recv = trio.open_memory_channel[Sequence[Candle]](max_buffer)
        self._listeners.add(send)
        try:
            with recv:
                yield recv
        finally:
            self._listeners.discard(send)
            send.close()

    async def wait_committed(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking again after every commit attempt
        (failed ones too, so tests can wait for ``not stats.healthy``)."""
        while not predicate():
            await self._attempted.wait()

    async def wipe(self) -> None:
        """Delete every stored candle and series, and drop candles held but not yet committed.

        Runs in the writer thread between commits, so the app keeps running; readers see an
        empty store from their next query on.
        """
        db = self._require_db()
        async with self._db_lock:
            dropped = self._pending.clear() + len(self._inflight)
            self._inflight = {}
            self._room.set()
            await self._in_thread(db.wipe)
        log.info("store wiped (%d held candles dropped)", dropped)

    async def write_job(
        self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str
    ) -> None:
        """Commit ``candles`` (history a job fetched) with the job's document, at once and
        in one transaction: they bypass the live batch, and are not published to listeners."""
        db = self._require_db()
        async with self._db_lock:
            await self._in_thread(db.write_job, candles, job_id, created_at, doc)
        self._counters.committed += len(candles)

    async def delete_job(self, job_id: str) -> None:
        db = self._require_db()
        async with self._db_lock:
            await self._in_thread(db.delete_job, job_id)

    async def load_jobs(self) -> list[str]:
        db = self._require_db()
        async with self._db_lock:
            return await self._in_thread(db.load_jobs)

    async def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Runs of closed candles stored in [start, end], read on the write connection so they
        include everything a job committed a moment ago."""
        db = self._require_db()
        async with self._db_lock:
            return await self._in_thread(db.closed_runs, exchange, symbol, interval, start, end)

    def _require_db(self) -> Database:
        if self._db is None:
            raise StoreError("the store writer is not running")
        return self._db

    async def _in_thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._thread)
