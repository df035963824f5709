"""The backfill jobs of a running feedd: created over the API, run in the background, saved
in the store through the writer, resumed after a restart, cancelled on request.

Jobs of one venue run one at a time, in the order they were made (the others wait as
``queued``); every job's REST calls draw from the venue's one budget behind live heals.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx
import orjson
import trio

from feedd import exchanges
from feedd.candle import Candle
from feedd.config import Config
from feedd.engine.rest import RestClient
from feedd.engine.stats import ExchangeStats
from feedd.engine.supervisor import Supervisor
from feedd.errors import FeeddError, StoreError
from feedd.jobs import cancel, lease
from feedd.jobs.lease import JobLeases
from feedd.jobs.model import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Job,
    SymbolJob,
    first_open,
    last_wanted,
    now_ms,
)
from feedd.jobs.runner import JobRunner
from feedd.migrate.copy import KIND as MIGRATION_KIND
from feedd.store.coverage import count
from feedd.store.writer import Writer

log = logging.getLogger("feedd.jobs")

#: jobs kept in the list; beyond it the oldest finished ones are forgotten
MAX_JOBS = 200


class JobError(FeeddError):
    """A job request refused: ``status`` for the API, ``field`` at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


#: how long a new job waits for the venue's clock before taking the local one
VENUE_TIME_TIMEOUT_S = 5.0
#: wait before asking a store that could not be written for the saved jobs again (doubling)
RELOAD_FIRST_S = 1.0
RELOAD_MAX_S = 60.0


class StoreWipes(Protocol):
    """Wipes of the store by other nodes, as this node learns of them (feedd/cluster.py)."""

    @property
    def wipes(self) -> int: ...

    async def wait_wiped(self, seen: int) -> int: ...


class JobManager:
    def __init__(
        self,
        writer: Writer,
        supervisor: Supervisor,
        http: httpx.AsyncClient,
        config: Callable[[], Config],
        node_id: str | None = None,
        epochs: StoreWipes | None = None,
    ) -> None:
        self.writer = writer
        #: who runs which job among the nodes sharing the store (feedd/jobs/lease.py)
        self.leases = JobLeases(writer, node_id or secrets.token_hex(16))
        self.supervisor = supervisor
        self.http = http
        self.config = config
        #: wipes of the store by other nodes (feedd/cluster.py), on which the jobs are forgotten
        self.epochs = epochs
        self.jobs: dict[str, Job] = {}
        #: rows fetched by jobs, per (exchange, source), for /metrics
        self.rows: Counter[tuple[str, str]] = Counter()
        self._nursery: trio.Nursery | None = None
        self._venues: dict[str, trio.Lock] = {}
        self._stats: dict[str, ExchangeStats] = {}
        #: set (and replaced) at every save of any job
        self._changed = trio.Event()
        #: jobs stopped because the store lost them (wiped): their end is not saved
        self._unsaved: set[str] = set()
        #: False on a node that runs no job (role "api"): it lists them
        self._execute = True

    async def run(
        self, *, execute: bool = True, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run new jobs until cancelled; the saved ones are loaded and resumed meanwhile.
        ``execute`` False (an API node): only list the saved jobs, as the store has them."""
        self._execute = execute
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._resume_saved)
            if self.epochs is not None:
                nursery.start_soon(self._forget_when_wiped, self.epochs)
            task_status.started()
            await trio.sleep_forever()

    async def _resume_saved(self) -> None:
        """Load the saved jobs and resume the unfinished ones, then look again every
        ``lease.POLL_S`` for jobs other nodes sharing the store made (and how the ones they
        run get on). A store that cannot be written yet (opened read-only, say) is asked
        again until it can: startup never waits for it, and feedd serves meanwhile."""
        delay = RELOAD_FIRST_S
        while True:
            try:
                records, known = await self._load()
            except StoreError as exc:
                log.warning(
                    "saved backfill jobs not loaded yet (%s); asking again in %g s", exc, delay
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RELOAD_MAX_S)
                continue
            delay = RELOAD_FIRST_S
            self._take_saved(records, known)
            await trio.sleep(lease.POLL_S)

    async def _load(self) -> tuple[list[str], set[str]]:
        """The saved jobs, and the ids of the jobs known here before they were read: each of
        those was saved before, so one missing from the store was deleted since."""
        known = set(self.jobs)
        return await self.writer.load_jobs(), known

    def _take_saved(self, records: list[str], known_before: set[str]) -> None:
        """Make the list follow the store: jobs made elsewhere join it, jobs run elsewhere
        show their progress, jobs deleted elsewhere leave it, and cancels asked for elsewhere
        of the jobs this node runs are applied."""
        assert self._nursery is not None
        saved: dict[str, str] = {}
        requests: set[str] = set()
        for raw in records:
            try:
                record = orjson.loads(raw)
                kind = record.get("kind") if isinstance(record, dict) else None
                if kind == MIGRATION_KIND:
                    continue  # ``feedd migrate``'s progress row shares the table
                if kind == cancel.KIND:
                    requests.add(str(record["job"]))
                    continue
                job = Job.from_record(record)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("skipping a saved job that does not read back: %r", exc)
                continue
            saved[job.id] = job.state
            known = self.jobs.get(job.id)
            if known is not None:
                # Run by another node: show its progress. (Otherwise ours, or a new job that
                # drew the same id meanwhile.)
                elsewhere = not self._execute or self.leases.elsewhere(job.id)
                if elsewhere and known.state in ACTIVE:
                    lease.adopt(known, record)
                    self._notify()
                continue
            if job.id in self._unsaved:
                continue  # being stopped as lost: its last save is deleted once it ends
            self.jobs[job.id] = job
            self._notify()  # a job made elsewhere joins this node's list (maybe already over)
            if job.state in ACTIVE and self._execute:
                log.info("resuming backfill job %s (%s)", job.id, job.exchange)
                job.state = QUEUED
                self._nursery.start_soon(self._run, job)
        for job_id in known_before - saved.keys():
            gone = self.jobs.get(job_id)
            if gone is not None:
                self._nursery.start_soon(self._drop, gone)
        for job_id in requests:
            asked = self.jobs.get(job_id)
            if saved.get(job_id) not in ACTIVE:
                # Applied (or the job ended or went meanwhile): the request has done its work.
                self._nursery.start_soon(self._delete_quietly, cancel.request_id(job_id))
            elif asked is not None and asked.state in ACTIVE and self._holds(job_id):
                log.info("backfill job %s: cancelled on another node", job_id)
                self._nursery.start_soon(self._stop, asked)

    def _holds(self, job_id: str) -> bool:
        return self.leases.holder(job_id) == self.leases.node_id

    async def _drop(self, job: Job) -> None:
        """Forget a job the store no longer has (another node deleted it, or wiped the
        store): stopped here without saving it again, and whatever it saved meanwhile
        deleted, so that no node takes up a job the operator removed."""
        if job.state not in ACTIVE:
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]
                self._notify()
            return
        log.warning("backfill job %s is gone from the store (deleted elsewhere): stopped", job.id)
        self._unsaved.add(job.id)
        try:
            self._end(job, CANCELLED)
            job.scope.cancel()
            await job.ended.wait()
            with trio.CancelScope(shield=True):
                await self._delete_quietly(job.id)
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]
        finally:
            self._unsaved.discard(job.id)
        self._notify()

    async def venue_now(self, exchange: str) -> int:
        """The venue's clock (its time endpoint, through its budget), as the runner and heals
        decide what has closed; the local clock if the venue does not answer in time (the
        job then meets the same venue when it runs)."""
        module = exchanges.get(exchange)
        with trio.move_on_after(VENUE_TIME_TIMEOUT_S):
            try:
                rest = self._rest_client(exchange, background=False)
                venue_ms: int = await rest.call(module.time_request(), module.parse_time)
                return venue_ms
            except FeeddError as exc:
                log.warning("%s time unavailable, using the local clock: %s", exchange, exc)
        return now_ms()

    def check_retention(self, interval: str, since: int, until: int, now: int) -> None:
        """Refuse a range retention would prune at once: it keeps the newest ``max_records``
        candles of a series, so a range holding more loses its oldest part as it lands.
        ``now`` is the venue's clock (``venue_now``): candles after it are not counted."""
        keep = self.writer.settings.max_records
        if keep <= 0:
            return
        first = first_open(interval, since)
        newest = last_wanted(interval, until, now)
        wanted = count(interval, first, newest) if first <= newest else 0
        if wanted > keep:
            raise JobError(
                400,
                f"max_records is {keep}: retention keeps that many {interval} candles per series"
                f" and would delete most of this range ({wanted} candles from since to until) as"
                " soon as it is stored; set max_records to 0 (keep everything) or at least"
                f" {wanted} and restart feedd",
                "since",
            )

    async def create(
        self,
        exchange: str,
        symbols: Sequence[str],
        interval: str,
        since: int,
        until: int,
        venue_ms: int | None = None,
    ) -> Job:
        """A new job, started; ``venue_ms`` is the venue's clock (asked when not given)."""
        assert self._nursery is not None, "create() before run()"
        if venue_ms is None:
            venue_ms = await self.venue_now(exchange)
        self.check_retention(interval, since, until, venue_ms)
        created = now_ms()
        end = last_wanted(interval, until, venue_ms)
        if first_open(interval, since) > end:
            raise JobError(400, "no closed candle opens between since and until", "since")
        await self._make_room()
        job = Job(
            id=self._new_id(),
            exchange=exchange,
            interval=interval,
            since=since,
            until=until,
            end=end,
            symbols=[SymbolJob(s) for s in symbols],
            created_at=created,
        )
        await self._save(job)
        self.jobs[job.id] = job
        log.info(
            "backfill job %s: %s %s %s from %d to %d",
            job.id,
            exchange,
            ",".join(symbols),
            interval,
            since,
            until,
        )
        self._nursery.start_soon(self._run, job)
        return job

    def document(self, job: Job) -> dict[str, Any]:
        """The job for the API, with the node whose lease it runs under (None: no node)."""
        return {**job.document(), "node": self.leases.holder(job.id)}

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(404, f"no backfill job {job_id[:40]!r}", "id")
        return job

    async def cancel(self, job_id: str, *, anywhere: bool = False) -> tuple[Job, bool, bool]:
        """Cancel an active job (kept, as cancelled) or forget a finished one (removed: the
        second value). A job this node does not run is cancelled through the store: a request
        the node running it applies at its next look at the saved jobs (or the node taking it
        over, if that one died), waited for up to ``cancel.wait_s()``; the third value is True
        when it was not applied yet by then (it still will be). ``anywhere``: stopped here
        only, the store is about to be wiped."""
        job = self.get(job_id)
        if job.state not in ACTIVE:
            del self.jobs[job_id]
            await self.writer.delete_job(job_id)
            self._notify()
            return job, True, False
        if anywhere or self._holds(job_id):
            await self._stop(job, request=False)
            return job, False, False
        stopped = await cancel.through_store(self.writer, job, self.leases.node_id)
        self._notify()
        return job, False, not stopped

    def _end(self, job: Job, state: str) -> None:
        job.state = state
        job.finished_at = now_ms()
        for sym in job.symbols:
            if sym.state in ACTIVE:
                sym.state = state

    async def _stop(self, job: Job, *, request: bool = True) -> None:
        """Cancel a job this node runs; its task saves the end once its last write is behind
        it. ``request``: a saved cancel request is then deleted (it has done its work)."""
        self._end(job, CANCELLED)
        job.scope.cancel()
        await job.ended.wait()
        with trio.CancelScope(shield=True):
            # Stopped while still taking its lease, the task saved nothing: without this save
            # the store would still say the job runs (and another node would run it).
            try:
                await self._save(job)
            except StoreError as exc:
                log.warning("backfill job %s: cannot save its end: %s", job.id, exc)
                return  # the request stays, for the next holder to apply
            if request:
                await self._delete_quietly(cancel.request_id(job.id))

    async def _delete_quietly(self, job_id: str) -> None:
        """Delete a saved document in the background: a store failing now leaves it for the
        next look at the saved jobs."""
        try:
            await self.writer.delete_job(job_id)
        except StoreError as exc:
            log.warning("saved document %s not deleted yet: %s", job_id, exc)

    async def forget_all(self) -> None:
        """Cancel every active job, wait for each to end, and forget them all (the database
        they are saved in is about to be wiped, their rows with it)."""
        active = [job for job in self.jobs.values() if job.state in ACTIVE]
        for job in active:
            await self.cancel(job.id, anywhere=True)
        log.warning("backfill jobs forgotten: %d (%d were active)", len(self.jobs), len(active))
        self.jobs.clear()

    async def forget_wiped(self) -> None:
        """Another node wiped the store, the saved jobs with it: every job here goes too,
        the active ones stopped without being saved again."""
        gone = list(self.jobs.values())
        for job in gone:
            await self._drop(job)
        if gone:
            log.warning("backfill jobs forgotten: %d (the store was wiped elsewhere)", len(gone))

    async def _forget_when_wiped(self, epochs: StoreWipes) -> None:
        seen = epochs.wipes
        while True:
            seen = await epochs.wait_wiped(seen)
            await self.forget_wiped()

    def active(self) -> dict[str, list[dict[str, Any]]]:
        """Queued and running jobs per exchange, briefly (for /status)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for job in self.jobs.values():
            if job.state in ACTIVE:
                doc = job.document()
                out.setdefault(job.exchange, []).append(
                    {k: doc[k] for k in ("id", "state", "rows_done", "rows_expected", "eta_s")}
                )
        return out

    async def _run(self, job: Job) -> None:
        try:
            await self._run_job(job)
        finally:
            job.ended.set()
            # The lease may have found the job ended on another node (its saved state taken
            # in, with no save here): whoever waits on this node's list must hear of it.
            self._notify()

    async def _run_job(self, job: Job) -> None:
        with job.scope:
            await self.leases.run(job, functools.partial(self._run_held, job))

    async def _run_held(self, job: Job) -> None:
        """The job, this node holding its lease; its end is saved before the lease goes."""
        try:
            if await cancel.requested(self.writer, job.id):
                # Cancelled while no node ran it (its holder died, say): applied by the taker.
                log.info("backfill job %s: cancelled on another node", job.id)
                self._end(job, CANCELLED)
                return
            async with self._venues.setdefault(job.exchange, trio.Lock()):
                job.state = RUNNING
                settings = self.config().exchanges.get(job.exchange)
                runner = JobRunner(
                    job,
                    exchanges.get(job.exchange),
                    lambda: self._rest(job),
                    self.writer,
                    self._save,
                    http=self.http,
                    archive_url=settings.archive_url if settings else None,
                )
                try:
                    await runner.run()
                except Exception as exc:
                    # A bug in one job must not take the others (or feedd) down.
                    log.exception("backfill job %s crashed", job.id)
                    job.error(f"internal error: {exc!r}")
                    job.state = FAILED
            job.finished_at = now_ms()
        finally:
            if job.state in (DONE, FAILED, CANCELLED) and job.id not in self._unsaved:
                log.info("backfill job %s %s", job.id, job.state)
                with trio.CancelScope(shield=True):
                    try:
                        await self._save(job)
                        if job.state == CANCELLED:
                            await self.writer.delete_job(cancel.request_id(job.id))
                    except StoreError as exc:
                        log.warning("backfill job %s: cannot save its end: %s", job.id, exc)

    def _rest(self, job: Job) -> RestClient:
        return self._rest_client(job.exchange, background=True)

    def _rest_client(self, exchange: str, *, background: bool) -> RestClient:
        module = exchanges.get(exchange)
        settings = self.config().exchanges.get(exchange)
        base = (settings.rest_url if settings else None) or module.DEFAULT_REST_URL
        stats = self.supervisor.stats.get(exchange)
        if stats is None:
            stats = self._stats.setdefault(exchange, ExchangeStats(exchange))
        return RestClient(
            module,
            base,
            self.http,
            stats,
            log,
            pacer=self.supervisor.budget(exchange),
            background=background,
        )

    async def _save(self, job: Job, candles: Sequence[Candle] = (), source: str = "rest") -> None:
        doc = orjson.dumps(job.record()).decode()
        await self.writer.write_job(candles, job.id, job.created_at, doc)
        if candles:
            self.rows[(job.exchange, source)] += len(candles)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking after every save of a job."""
        while not predicate():
            await self._changed.wait()

    async def _make_room(self) -> None:
        if len(self.jobs) < MAX_JOBS:
            return
        finished = [j for j in self.jobs.values() if j.state not in ACTIVE]
        if not finished:
            raise JobError(409, f"{MAX_JOBS} jobs are queued or running; cancel some first")
        oldest = finished[0]
        del self.jobs[oldest.id]
        await self.writer.delete_job(oldest.id)

    def _new_id(self) -> str:
        while True:
            job_id = secrets.token_hex(4)
            if job_id not in self.jobs:
                return job_id
