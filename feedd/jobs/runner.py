"""Run one backfill job: each symbol in turn, fetching only the open times not stored closed:
from the venue's bulk archive where it has one (older days), over REST for the rest.

A symbol's cursor marks the open times done (stored closed, or asked for and found absent at
the venue); it is saved in the same transaction as the candles that moved it, so a crash
never leaves it ahead of what is stored. Below the cursor nothing is asked again; above it,
the stored runs of closed candles (``runs``) say which ranges are still missing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

import httpx
import trio

from feedd.candle import Candle
from feedd.engine.archive import ArchiveBatch, fetch_archive
from feedd.engine.rest import RestClient
from feedd.errors import FeeddError, RateLimited, StoreError
from feedd.exchanges.contract import ExchangeModule, Stream
from feedd.intervals import INTERVAL_MS, floor_open, next_open
from feedd.jobs.model import DONE, FAILED, RUNNING, Job, SymbolJob
from feedd.store.coverage import count, previous_open

log = logging.getLogger("feedd.jobs")

#: open times asked for between two saves of the cursor (a few pages)
CHUNK = 3000
#: failed rounds in a row before a symbol is given up
MAX_FAILURES = 5
RETRY_S = 5.0
#: wait for the venue's clock to close the last candle wanted
CLOSE_WAIT_S = 5.0
#: bytes of a page's body per row, at least, on every venue (a kline in JSON): the rows a
#: page's parse is counted as in the store's job turns, before it is parsed
ROW_BYTES = 100

Save = Callable[[Job, Sequence[Candle], str], Awaitable[None]]


class Runs(Protocol):
    async def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]: ...

    async def job_turn(self, rows: int) -> None: ...


def holes(
    interval: str, start: int, end: int, runs: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Ranges of [start, end] outside ``runs`` (ascending, disjoint, clipped)."""
    out = []
    t = start
    for a, b in runs:
        if b < t:
            continue
        if a > end:
            break
        if a > t:
            out.append((t, previous_open(interval, a)))
        t = next_open(interval, b)
    if t <= end:
        out.append((t, end))
    return out


def chunks(interval: str, start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    t = start
    while t <= end:
        last = t
        n = 1
        # Walk by the interval's fixed length where it has one (all but 1M).
        if interval != "1M":
            last = min(end, t + (size - 1) * INTERVAL_MS[interval])
        else:
            while n < size and next_open(interval, last) <= end:
                last = next_open(interval, last)
                n += 1
        yield t, last
        t = next_open(interval, last)


class JobRunner:
    def __init__(
        self,
        job: Job,
        module: ExchangeModule,
        rest: Callable[[], RestClient],
        store: Runs,
        save: Save,
        *,
        http: httpx.AsyncClient | None = None,
        archive_url: str | None = None,
    ) -> None:
        self.job = job
        self.module = module
        self.rest = rest
        self.store = store
        self.save = save
        self.http = http
        #: the venue's bulk archive, when it has one for the job's interval (else None)
        archive = module.ARCHIVE
        usable = archive is not None and job.interval in archive.intervals and http is not None
        self.archive_url = (archive_url or archive.default_url) if archive and usable else None

    async def run(self) -> None:
        """Fill every symbol not finished yet; the job's state says how it ended."""
        job = self.job
        for sym in job.symbols:
            if sym.state in (DONE, FAILED):
                continue
            sym.state = RUNNING
            await self.save(job, (), "rest")
            await self._run_symbol(sym)
        job.state = FAILED if any(s.state == FAILED for s in job.symbols) else DONE

    async def _run_symbol(self, sym: SymbolJob) -> None:
        job, module = self.job, self.module
        interval = job.interval
        stream = Stream(sym.symbol, interval)
        if sym.cursor is None:
            sym.cursor = job.first
        failures = 0
        while sym.cursor <= job.end:
            try:
                server_now = await self.rest().call(module.time_request(), module.parse_time)
                stop = min(job.end, previous_open(interval, floor_open(interval, server_now)))
                if sym.cursor > stop:
                    # Closed by our clock, not yet by the venue's.
                    await trio.sleep(CLOSE_WAIT_S)
                    continue
                await self._fill(sym, stream, sym.cursor, stop, server_now)
                failures = 0
            except RateLimited as exc:
                # The client waited out the venue's limit several times: no verdict on the job.
                job.error(f"{sym.symbol}: rate limited, will retry: {exc}")
                await trio.sleep(RETRY_S)
            except StoreError as exc:
                # The writer heals (disk full, locked): keep the job, try again.
                job.error(f"{sym.symbol}: store: {exc}")
                await trio.sleep(RETRY_S)
            except FeeddError as exc:
                failures += 1
                job.error(f"{sym.symbol}: {exc}")
                log.warning("job %s %s failed (%d): %s", job.id, sym.symbol, failures, exc)
                if failures >= MAX_FAILURES:
                    sym.state = FAILED
                    await self._save_quietly()
                    return
                await trio.sleep(RETRY_S * failures)
        runs = await self.store.closed_runs(job.exchange, sym.symbol, interval, job.first, job.end)
        sym.rows_done = sum(count(interval, a, b) for a, b in runs)
        sym.state = DONE
        await self.save(job, (), "rest")

    async def _save_quietly(self) -> None:
        try:
            await self.save(self.job, (), "rest")
        except StoreError as exc:
            log.warning("job %s: cannot save its state: %s", self.job.id, exc)

    async def _fill(
        self, sym: SymbolJob, stream: Stream, start: int, stop: int, server_now: int
    ) -> None:
        """Fetch what is missing in [start, stop]; the cursor ends past ``stop``."""
        job = self.job
        interval = job.interval
        runs = await self.store.closed_runs(job.exchange, sym.symbol, interval, job.first, job.end)
        sym.rows_done = sum(count(interval, a, b) for a, b in runs)
        for a, b in holes(interval, start, stop, runs):
            if self.archive_url is not None:
                a = await self._from_archive(sym, stream, a, b, server_now)
            if a <= b:
                await self._rest_range(sym, stream, a, b, server_now)
        sym.cursor = next_open(interval, stop)
        await self.save(job, (), "rest")

    async def _rest_range(
        self, sym: SymbolJob, stream: Stream, a: int, b: int, server_now: int
    ) -> None:
        for first, last in chunks(self.job.interval, a, b, CHUNK):
            await self._fetch(sym, stream, first, last, server_now)

    async def _from_archive(
        self, sym: SymbolJob, stream: Stream, a: int, b: int, server_now: int
    ) -> int:
        """Fill [a, b] from the archive, a file at a time; ranges it cannot serve (not
        published, a bad file, holes in a file) go to REST. Returns where REST takes over."""
        job = self.job
        interval = job.interval
        assert self.archive_url is not None and self.http is not None
        batches = fetch_archive(
            self.module, self.http, self.archive_url, sym.symbol, interval, a, b, server_now
        )
        try:
            async for batch in batches:
                a = await self._archive_batch(sym, stream, batch, server_now)
        except RateLimited:
            raise  # the round waits and comes back; the archive is still the way
        except FeeddError as exc:
            # The archive is a shortcut: unreachable (an offline box, a proxy), REST serves.
            job.error(f"archive unusable, fetching over REST: {exc}")
            log.warning("job %s: archive unusable, using REST: %s", job.id, exc)
            self.archive_url = None
        return a

    async def _archive_batch(
        self, sym: SymbolJob, stream: Stream, batch: ArchiveBatch, server_now: int
    ) -> int:
        """Store one archive file's candles (REST for what it lacks); returns the open time
        after it."""
        job = self.job
        interval = job.interval
        lo, hi = batch.first_open_ms, batch.last_open_ms
        if not batch.ok:
            if batch.error is not None:
                job.error(f"{sym.symbol}: archive: {batch.error}; fetching over REST")
            await self._rest_range(sym, stream, lo, hi, server_now)
            return next_open(interval, hi)
        got = {c.open_time: c for c in batch.candles if c.closed and lo <= c.open_time <= hi}
        missing = holes(interval, lo, hi, [(t, t) for t in sorted(got)])
        sym.rows_done += len(got)
        job.fetched(len(got), "archive")
        if not missing:
            sym.cursor = next_open(interval, hi)
        await self.save(job, list(got.values()), "archive")
        for first, last in missing:
            # A hole in the file: the venue's REST may have it (else it counts absent).
            await self._rest_range(sym, stream, first, last, server_now)
        sym.cursor = next_open(interval, hi)
        return sym.cursor

    async def _fetch(
        self, sym: SymbolJob, stream: Stream, first: int, last: int, server_now: int
    ) -> None:
        """One chunk over REST, saved page by page; the last page moves the cursor."""
        job, module = self.job, self.module
        requests = module.kline_requests(stream, first, last, server_now)
        got = 0

        def parse(status: int, body: bytes) -> list[Candle]:
            # A page is parsed in a worker thread (a background REST client): it waits there
            # for a job turn, so that it does not hold the GIL while a live commit is due.
            if not trio.lowlevel.in_trio_run():
                trio.from_thread.run(self.store.job_turn, len(body) // ROW_BYTES)
            return module.parse_klines(stream, status, body, server_now)

        for index, request in enumerate(requests):
            candles = await self.rest().call(request, parse)
            closed = {c.open_time: c for c in candles if c.closed and first <= c.open_time <= last}
            got += len(closed)
            if index == len(requests) - 1:
                # What the venue did not send for these open times, it does not have.
                sym.absent += max(0, count(job.interval, first, last) - got)
                sym.cursor = next_open(job.interval, last)
            sym.rows_done += len(closed)
            job.fetched(len(closed), "rest")
            await self.save(job, list(closed.values()), "rest")
