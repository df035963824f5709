"""Running a saved job on one node at a time: under its lease in the shared store (taken
before the job runs, renewed while it does, given up at its end). A node that died leaves a
lease that expires on the store's clock; another node then takes the job over from the
progress saved with its candles. On SQLite (one node) the lease is always this node's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import trio

from feedd.errors import StoreError
from feedd.jobs.model import ACTIVE, QUEUED, Job
from feedd.store.lease import Lease

log = logging.getLogger("feedd.jobs")

#: a lease lasts this long unless renewed (a dead holder's job waits at most this)
LEASE_S = 30.0
#: the holder renews this often: two renewals may fail before the lease runs out
RENEW_S = 10.0
#: nodes not holding a job ask for it (and look for jobs made elsewhere) this often
POLL_S = 10.0
#: at most this long is spent giving a lease up (the store may be gone)
RELEASE_TIMEOUT_S = 5.0


class LeaseStore(Protocol):
    async def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> Lease: ...

    async def release_job(self, job_id: str, node_id: str) -> None: ...

    async def load_jobs(self) -> list[str]: ...


def adopt(job: Job, record: dict[str, Any]) -> None:
    """Take ``record``'s state into ``job``: the node that ran it last moved it on."""
    saved = Job.from_record(record)
    job.symbols = saved.symbols
    job.state = saved.state
    job.finished_at = saved.finished_at
    job.errors = saved.errors
    job.sources = saved.sources


class JobLeases:
    """This node's leases, and who holds each job's as last seen (for GET /backfill)."""

    def __init__(self, store: LeaseStore, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        #: job id -> the node holding its lease, as last seen (absent: nobody known)
        self.holders: dict[str, str] = {}
        #: set (and replaced) at every change of ``holders``
        self._changed = trio.Event()

    def holder(self, job_id: str) -> str | None:
        return self.holders.get(job_id)

    def elsewhere(self, job_id: str) -> str | None:
        """The other node running job ``job_id``, if another holds its lease."""
        holder = self.holders.get(job_id)
        return holder if holder is not None and holder != self.node_id else None

    async def run(self, job: Job, body: Callable[[], Awaitable[None]]) -> bool:
        """Run ``body`` while this node holds ``job``'s lease: wait for it (polling), take
        the job's saved state (another node may have moved it on), then run ``body`` with
        the lease renewed. If the lease is lost meanwhile (renewals failed for
        its whole length and another node took it), ``body`` is cancelled and the wait starts
        again. False when the job turned out to be over (``body`` not run)."""
        while True:
            if not await self._acquire(job):
                return False
            unread = False
            try:
                try:
                    found = await self._load(job)
                except StoreError as exc:
                    log.warning("backfill job %s: saved state not read: %s", job.id, exc)
                    unread = lost = True
                else:
                    if job.state not in ACTIVE:
                        return False  # it ended on the node that held it before
                    if not found:
                        # Deleted (the store wiped) since this node saw it: running it would
                        # bring back what the operator removed. The manager drops it.
                        return False
                    job.state = QUEUED
                    lost = await self._run_renewed(job, body)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
                    await self._release(job.id)
            if not lost:
                return True
            if unread:
                await trio.sleep(POLL_S)
            else:
                log.warning("backfill job %s: lease lost, waiting to take it again", job.id)

    async def _load(self, job: Job) -> bool:
        """Take the job's saved state, if the store has a readable one; False if the store
        has no document of the job at all."""
        for raw in await self.store.load_jobs():
            try:
                record = orjson.loads(raw)
                if isinstance(record, dict) and record.get("id") == job.id:
                    adopt(job, record)
                    return True
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # the manager logs saved jobs that do not read back
        return False

    async def _acquire(self, job: Job) -> bool:
        """Wait until this node holds the lease; False if the job ends meanwhile (seen by the
        manager's scan of saved jobs)."""
        while True:
            try:
                lease = await self.store.lease_job(job.id, self.node_id, int(LEASE_S * 1000))
            except StoreError as exc:
                log.warning("backfill job %s: lease not taken yet: %s", job.id, exc)
            else:
                self._seen(job.id, lease.node_id)
                if lease.node_id == self.node_id:
                    return True
            if job.state not in ACTIVE:
                return False
            await trio.sleep(POLL_S)

    async def _run_renewed(self, job: Job, body: Callable[[], Awaitable[None]]) -> bool:
        """``body`` with the lease renewed beside it; True if the lease was lost."""
        lost = False

        async def renew(scope: trio.CancelScope) -> None:
            nonlocal lost
            renewed = trio.current_time()
            while True:
                await trio.sleep(RENEW_S)
                try:
                    lease = await self.store.lease_job(job.id, self.node_id, int(LEASE_S * 1000))
                except StoreError as exc:
                    log.warning("backfill job %s: lease not renewed: %s", job.id, exc)
                    if trio.current_time() - renewed < LEASE_S:
                        continue
                    # Run out by now: another node may hold it. Stop, and ask again.
                    self._seen(job.id, None)
                else:
                    self._seen(job.id, lease.node_id)
                    if lease.node_id == self.node_id:
                        renewed = trio.current_time()
                        continue
                lost = True
                scope.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew, nursery.cancel_scope)
            await body()
            nursery.cancel_scope.cancel()
        return lost

    async def _release(self, job_id: str) -> None:
        if self.holders.get(job_id) != self.node_id:
            return
        try:
            await self.store.release_job(job_id, self.node_id)
        except StoreError as exc:
            # It runs out by itself.
            log.warning("backfill job %s: lease not given up: %s", job_id, exc)
        else:
            self._seen(job_id, None)

    def _seen(self, job_id: str, node_id: str | None) -> None:
        if self.holders.get(job_id) != node_id:
            if node_id is None:
                del self.holders[job_id]
            else:
                self.holders[job_id] = node_id
            self._changed.set()
            self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return at the next change of a holder."""
        await self._changed.wait()
