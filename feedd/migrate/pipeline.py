"""One run of ``feedd migrate``: open both stores, copy every series, the jobs, then verify."""

from __future__ import annotations

import functools
import time
from typing import Any, TextIO

import attrs
import trio

from feedd.ctl.progress import Progress
from feedd.errors import StoreError
from feedd.migrate.copy import BUSY_TIMEOUT_MS, Copier, in_thread, load_jobs, progress_id
from feedd.migrate.verify import Mismatch, verify
from feedd.store.backend import Backend, ReadStore, WriteConnection
from feedd.store.reader import SeriesInfo


@attrs.frozen
class Summary:
    source: str
    target: str
    series: int
    rows_total: int
    rows_copied: int
    jobs: int
    #: copying (rows_per_s is over this) and verifying
    copy_seconds: float
    verify_seconds: float
    verified: int
    mismatches: tuple[Mismatch, ...]

    @property
    def rows_per_s(self) -> float:
        return self.rows_copied / self.copy_seconds if self.copy_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = attrs.asdict(self)
        doc["rows_per_s"] = round(self.rows_per_s, 1)
        doc["copy_seconds"] = round(self.copy_seconds, 3)
        doc["verify_seconds"] = round(self.verify_seconds, 3)
        doc["ok"] = not self.mismatches
        return doc


async def migrate(source: Backend, target: Backend, batch: int, err: TextIO) -> Summary:
    """Copy, then verify; see the module docstring."""
    started = time.monotonic()
    where = source.spec, target.spec
    target.prepare()
    limiter = trio.CapacityLimiter(1)
    reader = source.open_reader()
    target_reader: ReadStore | None = None
    writer: WriteConnection | None = None
    try:
        found = await reader.series()
        source_jobs = await in_thread(load_jobs, source, limiter=None)
        writer = await in_thread(
            lambda: target.open_writer(busy_timeout_ms=BUSY_TIMEOUT_MS), limiter=limiter
        )
        if not writer.writable:
            raise StoreError(f"cannot write to {where[1]}: {writer.read_only_reason}")
        copier = Copier(writer, limiter, progress_id(where[0]), where[0], batch)
        await copier.load(await in_thread(writer.load_jobs, limiter=limiter))
        total = sum(info.count for info in found)
        print(
            f"migrating {where[0]} -> {where[1]}: {len(found)} series, {total:,} candles",
            file=err,
            flush=True,
        )
        bar = Progress("candles", err)
        await copier.copy(reader, found, functools.partial(_tick, bar, found, copier))
        bar.update(copier.copied, 1.0 if found else None, force=True)
        bar.finish()
        jobs = await copier.copy_jobs(source_jobs)
        # A bulk load leaves the planner no statistics until autovacuum comes by: range reads
        # were planned as a sequential scan and a sort per page meanwhile.
        print("analyzing the target's tables", file=err, flush=True)
        await in_thread(writer.analyze, limiter=limiter)
        copied_at = time.monotonic()
        target_reader = target.open_reader()
        mismatches = await verify(reader, target_reader, found, err)
    finally:
        if writer is not None:
            await in_thread(writer.close, limiter=limiter)
        reader.close()
        if target_reader is not None:
            target_reader.close()
    return Summary(
        where[0],
        where[1],
        len(found),
        total,
        copier.copied,
        jobs,
        copied_at - started,
        time.monotonic() - copied_at,
        len(found) - len(mismatches),
        tuple(mismatches),
    )


def _tick(bar: Progress, found: list[SeriesInfo], copier: Copier, index: int) -> None:
    bar.update(copier.copied, _share(found, index, copier))


def _share(found: list[SeriesInfo], index: int, copier: Copier) -> float:
    """Share of the whole done, by candles of the series finished plus the current one's
    position in its time range (a resumed run knows where it is, not how many it skipped)."""
    total = sum(info.count for info in found) or 1
    done = sum(info.count for info in found[:index])
    info = found[index]
    span = info.last_open_time - info.first_open_time
    position = copier.position(info)
    part = 1.0 if span <= 0 else min(1.0, max(0.0, (position - info.first_open_time) / span))
    return (done + part * info.count) / total
