"""Verifying a copy: per series, the row count and a checksum of the exported rows (open time,
exact values, trades, closed, source) on both sides; where they differ, the first open time."""

from __future__ import annotations

import hashlib
from typing import TextIO

import attrs
import trio

from feedd.ctl.progress import Progress
from feedd.migrate.copy import csv_lines
from feedd.store.backend import ReadStore
from feedd.store.exportrequest import ExportRequest
from feedd.store.reader import SeriesInfo


@attrs.frozen
class Mismatch:
    exchange: str
    symbol: str
    interval: str
    source_rows: int
    target_rows: int
    #: open time of the first row that differs (None when only the checksum says so)
    first_difference: int | None


@attrs.frozen
class Digest:
    rows: int
    checksum: str


async def digest(reader: ReadStore, info: SeriesInfo) -> Digest:
    """Rows of the series in the source's range and a checksum of their export lines (open
    time, exact values, trades, closed, source), identical text on every backend."""
    h = hashlib.blake2b(digest_size=16)
    rows = 0
    async for lines in csv_lines(reader.export(_range(info))):
        rows += len(lines)
        h.update("\n".join(lines).encode())
        h.update(b"\n")
    return Digest(rows, h.hexdigest())


async def verify(
    source: ReadStore, target: ReadStore, found: list[SeriesInfo], err: TextIO
) -> list[Mismatch]:
    print(f"verifying {len(found)} series", file=err, flush=True)
    bar = Progress("candles verified", err)
    total = sum(info.count for info in found) or 1
    done = 0
    mismatches = []
    for info in found:
        got: dict[str, Digest] = {}
        async with trio.open_nursery() as nursery:
            for side, reader in (("source", source), ("target", target)):
                nursery.start_soon(_digest_into, got, side, reader, info)
        if got["source"] != got["target"]:
            first = await first_difference(source, target, info)
            rows = got["source"].rows, got["target"].rows
            mismatches.append(Mismatch(info.exchange, info.symbol, info.interval, *rows, first))
        done += info.count
        bar.update(done, done / total)
    bar.finish()
    return mismatches


async def _digest_into(
    got: dict[str, Digest], side: str, reader: ReadStore, info: SeriesInfo
) -> None:
    got[side] = await digest(reader, info)


async def first_difference(source: ReadStore, target: ReadStore, info: SeriesInfo) -> int | None:
    """Open time of the first row present on one side only or different on the two."""
    a = await _rows(source, info)
    b = await _rows(target, info)
    for t in sorted(set(a) | set(b)):
        if a.get(t) != b.get(t):
            return t
    return None


async def _rows(reader: ReadStore, info: SeriesInfo) -> dict[int, str]:
    # Only for a series found different: reads it whole, which the report is worth.
    out = {}
    async for lines in csv_lines(reader.export(_range(info))):
        for line in lines:
            out[int(line.split(",", 1)[0])] = line
    return out


def _range(info: SeriesInfo) -> ExportRequest:
    return ExportRequest(info.exchange, info.symbol, info.interval, resampled=False,
                         format="csv", since=info.first_open_time,
                         until=info.last_open_time)  # fmt: skip
