"""The backfill jobs of a running feedd: created over the API, run in the background, saved
in the store through the writer, resumed after a restart, cancelled on request.

Jobs of one venue run one at a time, in the order they were made (the others wait as
``queued``); every job's REST calls draw from the venue's one budget behind live heals.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

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


class JobManager:
    def __init__(
        self,
        writer: Writer,
        supervisor: Supervisor,
        http: httpx.AsyncClient,
        config: Callable[[], Config],
    ) -> None:
        self.writer = writer
        self.supervisor = supervisor
        self.http = http
        self.config = config
        self.jobs: dict[str, Job] = {}
        #: rows fetched by jobs, per (exchange, source), for /metrics
        self.rows: Counter[tuple[str, str]] = Counter()
        self._nursery: trio.Nursery | None = None
        self._venues: dict[str, trio.Lock] = {}
        self._stats: dict[str, ExchangeStats] = {}
        #: set (and replaced) at every save of any job
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the saved jobs, resume the unfinished ones, run new ones until cancelled."""
        for raw in await self.writer.load_jobs():
            try:
                job = Job.from_record(orjson.loads(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("skipping a saved job that does not read back: %r", exc)
                continue
            self.jobs[job.id] = job
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for job in self.jobs.values():
                if job.state in ACTIVE:
                    log.info("resuming backfill job %s (%s)", job.id, job.exchange)
                    job.state = QUEUED
                    nursery.start_soon(self._run, job)
            task_status.started()
            await trio.sleep_forever()

    def check_retention(self, interval: str, since: int, until: int) -> None:
        """Refuse a range retention would prune at once: it keeps the newest ``max_records``
        candles of a series, so a range holding more loses its oldest part as it lands."""
        keep = self.writer.settings.max_records
        if keep <= 0:
            return
        first = first_open(interval, since)
        newest = last_wanted(interval, until, now_ms())
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
        self, exchange: str, symbols: Sequence[str], interval: str, since: int, until: int
    ) -> Job:
        assert self._nursery is not None, "create() before run()"
        self.check_retention(interval, since, until)
        created = now_ms()
        end = last_wanted(interval, until, created)
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

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(404, f"no backfill job {job_id[:40]!r}", "id")
        return job

    async def cancel(self, job_id: str) -> tuple[Job, bool]:
        """Cancel an active job (kept, as cancelled) or forget a finished one (True)."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            job.state = CANCELLED
            job.finished_at = now_ms()
            for sym in job.symbols:
                if sym.state in ACTIVE:
                    sym.state = CANCELLED
            # The job's task saves the final state once its last write is behind it.
            job.scope.cancel()
            await job.ended.wait()
            return job, False
        del self.jobs[job_id]
        await self.writer.delete_job(job_id)
        return job, True

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

    async def _run_job(self, job: Job) -> None:
        with job.scope:
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
        if job.state in (DONE, FAILED, CANCELLED):
            log.info("backfill job %s %s", job.id, job.state)
            with trio.CancelScope(shield=True):
                try:
                    await self._save(job)
                except StoreError as exc:
                    log.warning("backfill job %s: cannot save its end: %s", job.id, exc)

    def _rest(self, job: Job) -> RestClient:
        module = exchanges.get(job.exchange)
        settings = self.config().exchanges.get(job.exchange)
        base = (settings.rest_url if settings else None) or module.DEFAULT_REST_URL
        stats = self.supervisor.stats.get(job.exchange)
        if stats is None:
            stats = self._stats.setdefault(job.exchange, ExchangeStats(job.exchange))
        return RestClient(
            module,
            base,
            self.http,
            stats,
            log,
            pacer=self.supervisor.budget(job.exchange),
            background=True,
        )

    async def _save(self, job: Job, candles: Sequence[Candle] = (), source: str = "rest") -> None:
        doc = orjson.dumps(job.record()).decode()
        await self.writer.write_job(candles, job.id, job.created_at, doc)
        if candles:
            self.rows[(job.exchange, source)] += len(candles)
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
