"""Cancelling a job another node runs, through the shared store: the asking node saves a
request (a document of its own in the jobs table), the node holding the job's lease applies
it at its next look at the saved jobs (or, if that node died, the node taking the job up
does, before fetching anything), and the asking node waits for the job's saved end.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
import trio

from feedd.errors import StoreError
from feedd.jobs import lease
from feedd.jobs.model import ACTIVE, Job, now_ms

log = logging.getLogger("feedd.jobs")

#: the ``kind`` of a saved cancel request; its id is ``request_id(job id)``
KIND = "backfill-cancel"
PREFIX = "cancel-"
#: how often the asking node looks whether the holder applied it
POLL_S = 0.5


class JobDocs(Protocol):
    async def write_job(self, candles: Any, job_id: str, created_at: int, doc: str) -> None: ...

    async def load_jobs(self) -> list[str]: ...


def request_id(job_id: str) -> str:
    return PREFIX + job_id


def wait_s() -> float:
    """How long DELETE /backfill/<id> waits for the node running the job to stop it: its next
    look at the saved jobs, or the lease's expiry if it died."""
    return lease.LEASE_S + lease.POLL_S


async def saved(store: JobDocs, doc_id: str) -> dict[str, Any] | None:
    """The saved document ``doc_id`` (a job's, or a request's), if any."""
    for raw in await store.load_jobs():
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("id") == doc_id:
            return record
    return None


async def requested(store: JobDocs, job_id: str) -> bool:
    """Whether a cancel of ``job_id`` waits in the store; a store failing now says no (the
    next look at the saved jobs applies it instead)."""
    try:
        return await saved(store, request_id(job_id)) is not None
    except StoreError as exc:
        log.warning("backfill job %s: cancel requests not read: %s", job_id, exc)
        return False


async def through_store(store: JobDocs, job: Job, node_id: str) -> bool:
    """Save a cancel request for ``job`` and wait until its saved state shows it ended (taken
    into ``job``); False if that did not happen within ``wait_s()``."""
    doc = {"kind": KIND, "id": request_id(job.id), "job": job.id, "by": node_id, "at": now_ms()}
    await store.write_job([], request_id(job.id), job.created_at, orjson.dumps(doc).decode())
    log.info("backfill job %s: cancel asked of the node running it", job.id)
    with trio.move_on_after(wait_s()):
        while True:
            record = await saved(store, job.id)
            if record is None:
                return False  # deleted meanwhile: the next look at the saved jobs drops it
            if record.get("state") not in ACTIVE:
                lease.adopt(job, record)
                return True
            await trio.sleep(POLL_S)
    return False
