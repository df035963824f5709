"""Copying series from one store into another a batch at a time, each batch in one
transaction with the progress row that lets a rerun go on where the last one stopped."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
import trio

from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.store.backend import Backend, ReadStore, WriteConnection
from feedd.store.exportrequest import ExportRequest
from feedd.store.reader import SeriesInfo

T = TypeVar("T")

#: candles written per transaction (each also saves the progress row)
BATCH_ROWS = 20_000
BUSY_TIMEOUT_MS = 10_000
#: the ``kind`` of the progress row kept in the target's jobs table
KIND = "migrate"
_SOURCES = {"ws": Source.WS, "rest": Source.REST, "archive": Source.ARCHIVE}

SeriesKey = tuple[str, str, str]


def progress_id(source: str) -> str:
    """The id of the progress row for copies from ``source`` (one per source and target)."""
    return f"{KIND}-{hashlib.sha256(source.encode()).hexdigest()[:16]}"


class Copier:
    """Copies series a batch at a time; each batch and the progress row in one transaction."""

    def __init__(
        self, writer: WriteConnection, limiter: trio.CapacityLimiter, job_id: str, source: str,
        batch: int,
    ) -> None:  # fmt: skip
        self.writer = writer
        self.limiter = limiter
        self.job_id = job_id
        self.source = source
        self.batch = batch
        self.created_at = int(time.time() * 1000)
        #: per series: the open time to copy from next (inclusive)
        self.next: dict[str, int] = {}
        self.copied = 0

    async def load(self, docs: list[str]) -> None:
        for raw in docs:
            doc = _json(raw)
            if doc.get("id") == self.job_id and doc.get("kind") == KIND:
                self.next = {str(k): int(v) for k, v in doc.get("next", {}).items()}
                self.created_at = int(doc.get("created_at", self.created_at))

    def position(self, info: SeriesInfo) -> int:
        return self.next.get(_name(info), info.first_open_time)

    async def copy(
        self, reader: ReadStore, found: list[SeriesInfo], tick: Callable[[int], None]
    ) -> None:
        """Copy every series; ``tick(index)`` after each batch written. The next batch is read
        while one is written (the two sides share the work of two threads)."""
        send, recv = trio.open_memory_channel[tuple[int, SeriesInfo, list[Candle]]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, reader, found, send)
            async for index, info, candles in recv:
                await self._write(info, candles)
                tick(index)

    async def _read(
        self,
        reader: ReadStore,
        found: list[SeriesInfo],
        send: trio.MemorySendChannel[tuple[int, SeriesInfo, list[Candle]]],
    ) -> None:
        async with send:
            for index, info in enumerate(found):
                key = (info.exchange, info.symbol, info.interval)
                since = self.next.get(_name(info))
                if since is not None and since > info.last_open_time:
                    continue  # copied whole by an earlier run
                request = ExportRequest(*key, resampled=False, format="csv", since=since,
                                        until=info.last_open_time)  # fmt: skip
                pending: list[Candle] = []
                async for lines in csv_lines(reader.export(request)):
                    pending += _candles(key, lines)
                    while len(pending) >= self.batch:
                        await send.send((index, info, pending[: self.batch]))
                        del pending[: self.batch]
                if pending:
                    await send.send((index, info, pending))

    async def _write(self, info: SeriesInfo, candles: list[Candle]) -> None:
        last = candles[-1]
        # A forming last candle is copied again next time: the source may close it meanwhile.
        next_open = dict(self.next)
        next_open[_name(info)] = last.open_time + 1 if last.closed else last.open_time
        doc = orjson.dumps({
            "kind": KIND, "id": self.job_id, "source": self.source,
            "created_at": self.created_at, "next": next_open,
        }).decode()  # fmt: skip
        await in_thread(
            self.writer.write_job, candles, self.job_id, self.created_at, doc, limiter=self.limiter
        )
        self.next = next_open
        self.copied += len(candles)

    async def copy_jobs(self, docs: list[str]) -> int:
        """The source's saved jobs (backfill), by their own id; returns how many."""
        copied = 0
        for raw in docs:
            doc = _json(raw)
            job_id, created_at = doc.get("id"), doc.get("created_at")
            if doc.get("kind") == KIND or not isinstance(job_id, str):
                continue  # another migration's progress, or not a job document
            created = created_at if isinstance(created_at, int) else 0
            await in_thread(self.writer.write_job, [], job_id, created, raw, limiter=self.limiter)
            copied += 1
        return copied


def load_jobs(source: Backend) -> list[str]:
    writer = source.open_writer(busy_timeout_ms=BUSY_TIMEOUT_MS)
    try:
        return writer.load_jobs()
    finally:
        writer.close(checkpoint=False)


def _json(raw: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _name(info: SeriesInfo) -> str:
    return f"{info.exchange} {info.symbol} {info.interval}"


async def csv_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The rows of a CSV export, a chunk's worth at a time, header left out."""
    carry = b""
    header = True
    async for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        lines = data[:cut].decode("ascii").split("\n")
        lines.pop()
        if header and lines:
            header = False
            del lines[0]
        if lines:
            yield lines
    if carry.strip():
        raise StoreError(f"export ended inside a row: {carry[:80]!r}")


def _candles(key: SeriesKey, lines: list[str]) -> list[Candle]:
    exchange, symbol, interval = key
    out = []
    for line in lines:
        t, o, h, lo, c, v, q, n, closed, source = line.split(",")
        out.append(Candle(exchange, symbol, interval, int(t), o, h, lo, c, v, q,
                          int(n) if n else None, closed == "true", _SOURCES[source]))  # fmt: skip
    return out


async def in_thread(fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None) -> T:
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
