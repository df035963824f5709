"""The async writer: collects candle lists from a channel and commits them in batches.

One collector task keeps receiving while the previous batch commits in the writer thread, so
ingest waits on SQLite only when ``max_ahead`` candles are held (``max_held`` while commits
fail): backpressure that bounds memory. A failed commit reopens the connection at its retry;
at shutdown what cannot be committed in time is counted.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs
import trio

from feedd.candle import Candle
from feedd.errors import StoreError
from feedd.monitor.histogram import Histogram
from feedd.store.backend import Backend
from feedd.store.handle import DatabaseHandle
from feedd.store.lease import Lease
from feedd.store.state import Key, Pending, WriterCounters, WriterStats, fold

log = logging.getLogger("feedd.store")

#: while full, how often the collector looks whether ingest has stopped sending
FULL_POLL_S = 0.25
#: most candles of a job's write per transaction (a live commit may go between two)
JOB_SLICE = 250
#: job work (rows parsed or stored) between two live commits at most, per 50 ms of the batch
#: interval: a turn, opened by a live commit (see ``job_turn``)
JOB_TURN_ROWS = 750
JOB_TURN_PER_S = 0.05
#: what a job's row costs the process (parse ~13 us, store ~15 us, measured), doubled for a
#: shared box: a unit of job work starts only when it ends before the next live commit is due
JOB_ROW_S = 60e-6


@attrs.frozen
class WriterSettings:
    backend: Backend
    #: commit cadence
    batch_interval_ms: int
    max_records: int
    #: commit sooner when this many distinct candles are pending
    max_batch: int = 5000
    #: while the database fails, hold at most this many candles, then stop receiving
    max_held: int = 200_000
    #: while it commits, hold at most this many: a store slower than ingest makes ingest
    #: wait instead of holding more (each held candle costs ~600 B of RSS)
    max_ahead: int = 5000
    busy_timeout_ms: int = 2000
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    prune_interval_s: float = 5.0
    #: how long shutdown keeps trying to commit what is held (the service allows 10 s)
    final_commit_timeout_s: float = 5.0


class Writer:
    def __init__(self, settings: WriterSettings) -> None:
        # max_batch above the held limit would leave ingest waiting for the commit cadence.
        if not 0 < settings.max_batch <= min(settings.max_held, settings.max_ahead):
            raise ValueError("need 0 < max_batch <= max_held and max_ahead")
        self.settings = settings
        self._pending = Pending()
        #: the batch being committed (or retried); grows with pending while the DB fails
        self._inflight: dict[Key, Candle] = {}
        self._db = DatabaseHandle(settings.backend, busy_timeout_ms=settings.busy_timeout_ms)
        self._apart = settings.backend.writer_apart
        #: wipes asked for (POST /deleteDatabase on this node)
        self.wipes = 0
        #: held around every use of the database so wipe() slots in between commits
        self._db_lock = trio.Lock()
        self._counters = WriterCounters()
        #: seconds per successful commit, for /metrics
        self.commit_seconds = Histogram()
        self._listeners: set[trio.MemorySendChannel[Sequence[Candle]]] = set()
        self._ingest_listeners: set[trio.MemorySendChannel[Sequence[Candle]]] = set()
        self._wake = trio.Event()
        self._room = trio.Event()
        self._attempted = trio.Event()
        self._eof = False
        #: the limit of held candles was reported since the last commit
        self._said_full = False
        #: set with ``_eof``: a commit waiting out its backoff retries at once, then for
        #: ``final_commit_timeout_s`` at most
        self._closing = trio.Event()
        self._drain_deadline = math.inf
        self._last_prune = -float("inf")
        self._rng = random.Random()
        #: when the commit loop's next tick is due
        self._due = math.inf
        #: job rows run in the turn the last tick opened (none open before the first tick), and
        #: that tick (a new event each); ``ticks`` counts them
        self._turn_used = 0
        self._turn_open = False
        self._ticked = trio.Event()
        self.ticks = 0
        #: turns a job waited for (for tests and the benchmark)
        self.job_turns = 0
        #: the commit loop runs; it is between a wake and its tick (committing, pruning)
        self._running = False
        self._in_tick = False

    @property
    def stats(self) -> WriterStats:
        return self._counters.snapshot(
            self._held, self._db.rejected, self._limit, self._db.generation
        )

    @property
    def generation(self) -> int:
        """How many times the database file was found deleted or replaced and made anew."""
        return self._db.generation

    async def wait_recreated(self, seen: int) -> int:
        """Return the generation once it is past ``seen`` (the store lost its history)."""
        return await self._db.wait_recreated(seen)

    @property
    def _held(self) -> int:
        return len(self._pending) + len(self._inflight)

    @property
    def _ahead(self) -> int:
        """Held candles that count against ``_limit``. A writer in this process shares the
        loop's GIL: ingest running during a commit slowed both (measured: 3-8 µs more CPU per
        row), so the batch in flight counts. A writer apart runs on another core: while
        commits succeed, ingest fills the next batch during one."""
        if self._apart and self._counters.healthy:
            return len(self._pending)
        return self._held

    @property
    def _limit(self) -> int:
        """Candles held before ingest waits: few while commits succeed, many while they fail."""
        if self._counters.healthy:
            return min(self.settings.max_ahead, self.settings.max_held)
        return self.settings.max_held

    async def run(
        self,
        candles_recv: trio.MemoryReceiveChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Commit until every sender has closed, then commit what is held and return.

        A database that cannot be opened fails the start (StoreError) rather than retrying:
        that is a configuration problem the operator must see at once. One SQLite could open
        only read-only starts the writer unhealthy, reopening it until it is writable.
        """
        read_only = await self._db.start()
        if read_only is not None:
            log.error("%s; holding candles until it can be written", read_only)
            self._counters.healthy, self._counters.last_error = False, read_only
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_collector, candles_recv)
                task_status.started()
                await self._run_commits()
        finally:
            self._running = False
            self._open_turn()  # a job waiting for a turn goes
            with trio.move_on_after(self.settings.final_commit_timeout_s, shield=True):
                await self._final_flush()
            self._drop_held()
            await self._db.close()

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
                    self._tap(candles)
                    if self._ahead >= self._limit:
                        break
                    try:
                        candles = candles_recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break  # an ended channel ends the loop at the next receive
                if len(self._pending) >= max_batch:
                    self._wake.set()
                if self._held >= max_held and not self._said_full:
                    self._said_full = True
                    log.warning("holding %d candles, the limit: ingest waits", self._held)
                # Once ingest has stopped, take what it left in the channel (bounded by the
                # channel) so that shutdown never waits for room.
                while self._ahead >= self._limit and candles_recv.statistics().open_send_channels:
                    self._room = trio.Event()
                    with trio.move_on_after(FULL_POLL_S):
                        await self._room.wait()
        self._eof = True
        self._drain_deadline = trio.current_time() + self.settings.final_commit_timeout_s
        self._closing.set()
        self._wake.set()

    async def _run_commits(self) -> None:
        interval = self.settings.batch_interval_ms / 1000
        self._due = trio.current_time() + interval
        while True:
            if not self._eof and len(self._pending) < self.settings.max_batch:
                with trio.move_on_at(self._due):
                    await self._wake.wait()
            self._wake = trio.Event()
            self._due = trio.current_time() + interval
            self._in_tick = True
            if self._pending and not await self._commit_held():
                self._drop_held()
            await self._upkeep()
            await self._maybe_prune(force=self._eof)
            # Job work runs in the time up to the next tick (job_turn).
            self._open_turn()
            if self._eof and not self._held:
                return

    def _open_turn(self) -> None:
        self._in_tick = False
        self._turn_used, self._turn_open = 0, True
        self.ticks += 1
        ticked, self._ticked = self._ticked, trio.Event()
        ticked.set()

    async def _commit_held(self) -> bool:
        """Commit pending candles, retrying with capped, jittered backoff until it succeeds;
        False once shutting down and the time for it has run out."""
        self._take_pending()
        attempt = 0
        while True:
            try:
                await self._commit_once()
                return True
            except StoreError as exc:
                c = self._counters
                c.healthy, c.last_error, c.retries = False, str(exc), c.retries + 1
                self._notify_waiters()
                # A connection that failed may stay failed (SQLite opened the file read-only,
                # or an I/O error stuck): the retry opens a new one.
                await self._db.discard()
                ceiling = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2**attempt)
                attempt = min(attempt + 1, 30)
                delay = ceiling / 2 + self._rng.random() * ceiling / 2
                if self._eof:
                    left = self._drain_deadline - trio.current_time()
                    if left <= 0:
                        return False
                    delay = min(delay, left)
                log.warning(
                    "commit of %d candles failed (retry %d in %.1fs): %s",
                    self._held,
                    c.retries,
                    delay,
                    exc,
                )
                if self._eof:
                    await trio.sleep(delay)
                else:
                    with trio.move_on_after(delay):
                        await self._closing.wait()
                # Later arrivals ride along with the retry; folding keeps the newest values.
                self._take_pending()

    def _take_pending(self) -> None:
        """Move pending candles into the batch being committed."""
        taken = self._pending.take()
        if self._inflight:
            fold(self._inflight, taken.values())
        else:
            # Nothing in flight (every commit but a retry): pending is already folded, and
            # folding it again into an empty dict cost a key tuple and a lookup per candle.
            self._inflight = taken
        if self._apart:
            self._room.set()  # what was pending is in flight now: it no longer holds ingest

    async def _commit_once(self) -> None:
        start = trio.current_time()
        async with self._db_lock:
            db = await self._db.get()
            # Read under the lock: a wipe() that ran while we waited has dropped these.
            candles = list(self._inflight.values())
            await self._db.run(db.write, candles)
        c = self._counters
        elapsed = trio.current_time() - start
        c.latencies.append(elapsed)
        self.commit_seconds.observe(elapsed)
        if not c.healthy:
            log.info("store healthy again; committed %d held candles", len(candles))
        c.healthy, c.last_error = True, None
        self._said_full = False
        c.committed += len(candles)
        c.batches += 1
        self._inflight = {}
        self._room.set()
        self._publish(candles)

    async def _final_flush(self) -> None:
        """One more attempt when cancelled with candles held (ending the channel drains)."""
        self._take_pending()
        if not self._inflight:
            return
        try:
            await self._commit_once()
        except StoreError as exc:
            self._counters.last_error = str(exc)

    def _drop_held(self) -> None:
        """Give up on what is held, saying how much: only at shutdown."""
        self._take_pending()
        dropped, self._inflight = len(self._inflight), {}
        if dropped:
            self._counters.dropped += dropped
            log.error(
                "could not commit %d candles before shutdown, they are lost: %s",
                dropped,
                self._counters.last_error,
            )
        self._room.set()

    async def _upkeep(self) -> None:
        """What the store leaves for later (SQLite: moving a full journal), done right after
        the commit that left it, in the time before the next: no commit carries it."""
        if not self._db.upkeep_due:
            return  # nearly every tick: no lock, no call to the thread
        try:
            async with self._db_lock:
                db = await self._db.get()
                if db.upkeep_due:  # a wipe may have come first
                    await self._db.run(db.upkeep)
        except StoreError as exc:
            # Nothing is lost: the next write finds it due and does it.
            log.warning("store upkeep failed: %s", exc)

    async def _maybe_prune(self, *, force: bool = False) -> None:
        now = trio.current_time()
        if not force and now - self._last_prune < self.settings.prune_interval_s:
            return
        self._last_prune = now
        try:
            async with self._db_lock:
                # Retention waits for a commit to (re)open the database.
                if not self._db.is_open:
                    return
                db = await self._db.get()
                deleted = await self._db.run(db.prune, self.settings.max_records)
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

    def _tap(self, candles: Sequence[Candle]) -> None:
        for send in self._ingest_listeners:
            try:
                send.send_nowait(candles)
            except trio.WouldBlock:
                self._counters.listener_overflow += 1

    @contextmanager
    def open_ingest_listener(
        self, max_buffer: int = 1000
    ) -> Iterator[trio.MemoryReceiveChannel[Sequence[Candle]]]:
        """A channel that receives each candle list as the writer takes it in, before any
        commit (for forming updates on /ws); a slow reader loses lists (counted in
        ``stats.listener_overflow``) and never slows ingest."""
        send, recv = trio.open_memory_channel[Sequence[Candle]](max_buffer)
        self._ingest_listeners.add(send)
        try:
            with recv:
                yield recv
        finally:
            self._ingest_listeners.discard(send)
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
        # Counted before the wait for the lock: a heal whose REST answer arrives meanwhile
        # sees it and drops what it fetched for the store as it was.
        self.wipes += 1
        async with self._db_lock:
            db = await self._db.get()
            dropped = self._pending.clear() + len(self._inflight)
            self._inflight = {}
            self._room.set()
            await self._db.run(db.wipe)
        log.info("store wiped (%d held candles dropped)", dropped)

    async def write_job(
        self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str
    ) -> None:
        """Commit ``candles`` (history a job fetched) with the job's document: they bypass
        the live batch, and are not published to listeners.

        A month of an archive is 44,640 candles: one transaction would hold the store for a
        second while live commits wait. They go in slices of ``JOB_SLICE``, the lock given
        up between them (trio's lock is fair: a waiting live commit goes next), each in a job
        turn (``job_turn``: live candles pending go first); the document rides with the last
        slice, so a job's saved cursor never runs ahead of its candles.
        """
        slices = [candles[i : i + JOB_SLICE] for i in range(0, len(candles), JOB_SLICE)]
        for index, part in enumerate(slices or [candles]):
            await self.job_turn(len(part))
            async with self._db_lock:
                db = await self._db.get()
                if index == len(slices) - 1 or not slices:
                    await self._db.run(db.write_job, part, job_id, created_at, doc)
                else:
                    await self._db.run(db.write, part)
            self._counters.committed += len(part)

    async def job_turn(self, rows: int) -> None:
        """Wait until ``rows`` rows of job work (a page to parse, a slice to store) may run.

        Job work goes in turns, each opened by a tick of the commit loop (which commits the
        live candles pending): at most ``JOB_TURN_ROWS`` per 50 ms of batch interval, and a
        unit only when it ends (at ``JOB_ROW_S`` a row) before the next tick is due. So a live
        commit should not wait for the store or the GIL behind job work, and a live candle
        waits behind one turn at most. Past its turn the job asks for a tick at once (live
        first): it waits for a commit of what is pending, never out the batch interval, and
        not at all when nothing is pending. A unit bigger than a turn runs alone in a fresh
        one.
        """
        waited = False
        while self._ticking_ok():
            if (
                self._turn_open
                and self._turn_used + rows <= self._turn_rows
                and trio.current_time() + rows * JOB_ROW_S <= self._due
            ):
                break
            if waited and self._turn_open and self._turn_used == 0:
                break
            if not self._pending and not self._in_tick:
                # No live candle waits (none coming in, as for a node that only runs jobs):
                # a turn at once, a tick that has nothing to commit.
                self._open_turn()
            else:
                await self._next_turn()
            waited = True
        self._turn_used += rows

    @property
    def _turn_rows(self) -> int:
        per = self.settings.batch_interval_ms / 1000 / JOB_TURN_PER_S
        return max(JOB_TURN_ROWS, int(JOB_TURN_ROWS * per))

    def _ticking_ok(self) -> bool:
        """The commit loop ticks promptly: running, healthy (not in a retry's backoff), not
        draining at shutdown. Otherwise a job's work does not wait for it."""
        return self._running and self._counters.healthy and not self._eof

    async def _next_turn(self) -> None:
        """Have the commit loop tick now (committing live candles pending), and wait for that
        tick, at most a batch interval (a commit that fails or a wipe cost the job no more)."""
        self.job_turns += 1
        ticked = self._ticked
        if not self._in_tick:
            self._wake.set()
        with trio.move_on_after(self.settings.batch_interval_ms / 1000):
            await ticked.wait()

    async def delete_job(self, job_id: str) -> None:
        async with self._db_lock:
            db = await self._db.get()
            await self._db.run(db.delete_job, job_id)

    async def record_node(self, node_id: str, doc: str, at_ms: int) -> int:
        """Save this node's heartbeat (in the writer's thread, between commits); returns its
        stamp, the store's clock."""
        async with self._db_lock:
            db = await self._db.get()
            try:
                return await self._db.run(db.record_node, node_id, doc, at_ms)
            except StoreError:
                # A node that commits no candles (an API node) has no failed commit to replace
                # a broken connection: the next heartbeat must open a new one itself.
                await self._db.discard()
                raise

    async def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> Lease:
        """Take or renew job ``job_id``'s lease (feedd/store/lease.py); a failure discards
        the connection, as a heartbeat's does."""
        async with self._db_lock:
            db = await self._db.get()
            try:
                return await self._db.run(db.lease_job, job_id, node_id, ttl_ms)
            except StoreError:
                await self._db.discard()
                raise

    async def release_job(self, job_id: str, node_id: str) -> None:
        async with self._db_lock:
            db = await self._db.get()
            await self._db.run(db.release_job, job_id, node_id)

    async def load_jobs(self) -> list[str]:
        async with self._db_lock:
            db = await self._db.get()
            return await self._db.run(db.load_jobs)

    async def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Runs of closed candles stored in [start, end], read on the write connection so they
        include everything a job committed a moment ago."""
        async with self._db_lock:
            db = await self._db.get()
            return await self._db.run(db.closed_runs, exchange, symbol, interval, start, end)
