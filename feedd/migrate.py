"""``feedd migrate``: copy one store into another (SQLite -> PostgreSQL, or any pair) through the
store interface, resumably, then verify each series by row count and checksum on both sides.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import attrs
import orjson
import trio

from feedd import errors
from feedd.candle import Candle, Source
from feedd.ctl.progress import Progress
from feedd.errors import ConfigError, FeeddError, StoreError
from feedd.storageconfig import DSN_ENV, StorageConfig, parse_storage, redacted_dsn
from feedd.store.backend import Backend, ReadStore, WriteConnection, open_backend
from feedd.store.export import ExportRequest
from feedd.store.reader import SeriesInfo

T = TypeVar("T")
log = logging.getLogger("feedd.migrate")

#: candles written per transaction (each also saves the progress row)
BATCH_ROWS = 20_000
BUSY_TIMEOUT_MS = 10_000
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: the ``kind`` of the progress row kept in the target's jobs table
KIND = "migrate"
_SOURCES = {"ws": Source.WS, "rest": Source.REST, "archive": Source.ARCHIVE}
_SPEC = "sqlite:PATH or postgresql://user:password@host:port/database"

SeriesKey = tuple[str, str, str]

DESCRIPTION = """\
Copy every candle (exact values, closed flag, source) and every saved job of one store into
another through feedd's store interface: SQLite -> PostgreSQL to scale out, SQLite -> SQLite to
compact a file, PostgreSQL -> SQLite for a local copy. The target's upsert rules apply, so a
closed candle already there is never replaced by a forming one, and the coverage (holes
included) follows from the candles written.

Resumable: the target keeps how far each series got (a row in its jobs table, saved in the
same transaction as the candles), so after Ctrl-C, a kill or a crash the same command goes on
where it stopped, and a later run copies only what the source gained since. At the end each
series is verified over the source's range: row count and a checksum of every row's open time,
exact values, trades, closed flag and source must be equal on both sides; a difference is named
and the exit status is 1. Passwords are never printed.
"""

EPILOG = f"""\
stores: sqlite:PATH (relative to the current folder; sqlite:///abs/path also works) or
postgresql://user:password@host:port/database. --to defaults to ${DSN_ENV}.
exit status: 0 copied and verified, 1 a failure or a difference found, 2 bad arguments,
130 interrupted (run the same command again to continue).
"""


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


def add_command(commands: Any) -> None:
    """The ``migrate`` subcommand of ``feedd`` (``commands`` is argparse's subparsers)."""
    parser = commands.add_parser(
        "migrate",
        help="copy a store into another (SQLite -> PostgreSQL), resumable, verified",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Checked by ``run`` rather than argparse, so that a missing one is a one-line error too.
    parser.add_argument(
        "--from", dest="source", metavar="STORE", help=f"the store to copy: {_SPEC}"
    )
    parser.add_argument(
        "--to", dest="target", metavar="STORE", help=f"the store to fill (default: ${DSN_ENV})"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH_ROWS,
        metavar="ROWS",
        help=f"candles per transaction on the target (default: {BATCH_ROWS})",
    )


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``feedd migrate``: the exit status; every failure is one line on stderr."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        source = store_config("--from", args.source)
        check_source(source)
        target_text = args.target if args.target is not None else os.environ.get(DSN_ENV)
        if target_text is None:
            raise ConfigError("--to", f"missing: give {_SPEC}, or set ${DSN_ENV}")
        target = store_config("--to", target_text)
        if args.batch < 1:
            raise ConfigError("--batch", f"expected a positive number of rows, got {args.batch}")
        check_pair(source, target)
        summary = trio.run(migrate, source, target, args.batch, err)
    except ConfigError as exc:
        print(f"feedd migrate: error: {exc}", file=err)
        return EXIT_USAGE
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return _failed(exc, err)
    if args.json:
        out.write(orjson.dumps(summary.to_json()).decode() + "\n")
    else:
        out.write(describe(summary))
    out.flush()
    return EXIT_FAILED if summary.mismatches else EXIT_OK


def _failed(exc: BaseException, err: TextIO) -> int:
    """One line for what stopped the run (trio may wrap it in exception groups)."""
    if any(isinstance(e, KeyboardInterrupt) for e in errors.leaves(exc)):
        print("\nfeedd migrate: interrupted; run the same command again to continue", file=err)
        return EXIT_INTERRUPTED
    cause = errors.collapse(exc)
    if isinstance(cause, FeeddError):
        print(f"\nfeedd migrate: error: {cause}", file=err)
        return EXIT_FAILED
    # A bug: its traceback is what a fix needs.
    log.critical("unexpected error: %r", cause, exc_info=cause)
    return EXIT_FAILED


def store_config(option: str, text: str | None) -> StorageConfig:
    """``sqlite:PATH`` or a PostgreSQL URL as a storage config; errors never echo a URL."""
    if not text:
        raise ConfigError(option, f"missing: give {_SPEC}")
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]  # sqlite:///abs/path, the URL form
        if not path:
            raise ConfigError(option, "sqlite: needs a file, as in sqlite:./data/ohlcv.db")
        return StorageConfig(path=str(Path(path).absolute()))
    if text.split(":", 1)[0] in ("postgresql", "postgres"):
        try:
            return parse_storage({"storage": {"backend": "postgresql", "dsn": text}}, {}, [])
        except ConfigError as exc:
            raise ConfigError(option, exc.problem) from None
    raise ConfigError(option, f"expected {_SPEC}")


def check_source(source: StorageConfig) -> None:
    if source.backend == "sqlite":
        path = Path(source.path)
        if not path.is_file():
            raise ConfigError("--from", f"no SQLite store at {path}")
        check_sqlite_store(path)


def check_pair(source: StorageConfig, target: StorageConfig) -> None:
    same = source.backend == target.backend and (
        source.dsn == target.dsn if source.backend == "postgresql" else _same_file(source, target)
    )
    if same:
        raise ConfigError("--to", f"is the store --from names ({source.where})")


def check_sqlite_store(path: Path) -> None:
    """Refuse a file that is not a feedd store before anything opens it for writing (the
    writer would add feedd's tables to it)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError("--from", f"{path} is not a readable SQLite database ({exc})") from None
    if not {"series", "candles"} <= names:
        raise ConfigError("--from", f"{path} is not a feedd store (no candles table)")


def _same_file(a: StorageConfig, b: StorageConfig) -> bool:
    pa, pb = Path(a.path), Path(b.path)
    try:
        return pa.samefile(pb)
    except OSError:
        return pa.resolve() == pb.resolve()


def location(storage: StorageConfig) -> str:
    """Where a store is, for the operator: never a password."""
    return (
        f"sqlite:{storage.path}" if storage.backend == "sqlite" else redacted_dsn(storage.dsn or "")
    )


async def migrate(
    source_config: StorageConfig, target_config: StorageConfig, batch: int, err: TextIO
) -> Summary:
    """Copy, then verify; see the module docstring."""
    started = time.monotonic()
    base = Path.cwd()
    source, target = open_backend(source_config, base), open_backend(target_config, base)
    where = location(source_config), location(target_config)
    target.prepare()
    limiter = trio.CapacityLimiter(1)
    reader = source.open_reader()
    target_reader: ReadStore | None = None
    writer: WriteConnection | None = None
    try:
        found = await reader.series()
        source_jobs = await _in_thread(_load_jobs, source, limiter=None)
        writer = await _in_thread(
            lambda: target.open_writer(busy_timeout_ms=BUSY_TIMEOUT_MS), limiter=limiter
        )
        if not writer.writable:
            raise StoreError(f"cannot write to {where[1]}: {writer.read_only_reason}")
        copier = Copier(writer, limiter, progress_id(where[0]), where[0], batch)
        await copier.load(await _in_thread(writer.load_jobs, limiter=limiter))
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
        copied_at = time.monotonic()
        target_reader = target.open_reader()
        mismatches = await verify(reader, target_reader, found, err)
    finally:
        if writer is not None:
            await _in_thread(writer.close, limiter=limiter)
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
                async for lines in _csv_lines(reader.export(request)):
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
        await _in_thread(
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
            await _in_thread(self.writer.write_job, [], job_id, created, raw, limiter=self.limiter)
            copied += 1
        return copied


def _load_jobs(source: Backend) -> list[str]:
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


async def _csv_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
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


async def _in_thread(fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None) -> T:
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)


# --- verification ---------------------------------------------------------------------------


@attrs.frozen
class Digest:
    rows: int
    checksum: str


async def digest(reader: ReadStore, info: SeriesInfo) -> Digest:
    """Rows of the series in the source's range and a checksum of their export lines (open
    time, exact values, trades, closed, source), identical text on every backend."""
    h = hashlib.blake2b(digest_size=16)
    rows = 0
    async for lines in _csv_lines(reader.export(_range(info))):
        rows += len(lines)
        h.update("\n".join(lines).encode())
        h.update(b"\n")
    return Digest(rows, h.hexdigest())


async def verify(
    source: ReadStore, target: ReadStore, found: list[SeriesInfo], err: TextIO
) -> list[Mismatch]:
    print(f"verifying {len(found)} series", file=err, flush=True)
    bar = Progress("series", err)
    mismatches = []
    for n, info in enumerate(found):
        got: dict[str, Digest] = {}
        async with trio.open_nursery() as nursery:
            for side, reader in (("source", source), ("target", target)):
                nursery.start_soon(_digest_into, got, side, reader, info)
        if got["source"] != got["target"]:
            first = await first_difference(source, target, info)
            rows = got["source"].rows, got["target"].rows
            mismatches.append(Mismatch(info.exchange, info.symbol, info.interval, *rows, first))
        bar.update(n + 1, (n + 1) / len(found))
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
    async for lines in _csv_lines(reader.export(_range(info))):
        for line in lines:
            out[int(line.split(",", 1)[0])] = line
    return out


def _range(info: SeriesInfo) -> ExportRequest:
    return ExportRequest(info.exchange, info.symbol, info.interval, resampled=False,
                         format="csv", since=info.first_open_time,
                         until=info.last_open_time)  # fmt: skip


def describe(summary: Summary) -> str:
    lines = [
        f"copied {summary.rows_copied:,} of {summary.rows_total:,} candles in {summary.series}"
        f" series and {summary.jobs} jobs in {summary.copy_seconds:.1f} s"
        f" ({summary.rows_per_s:,.0f} candles/s)"
    ]
    for m in summary.mismatches:
        where = (
            ""
            if m.first_difference is None
            else f", first difference at open time {m.first_difference}"
        )
        lines.append(
            f"DIFFERENT {m.exchange} {m.symbol} {m.interval}: {m.source_rows} rows in the source,"
            f" {m.target_rows} in the target{where}"
        )
    if summary.mismatches:
        lines.append(f"verified: {len(summary.mismatches)} of {summary.series} series differ")
    else:
        lines.append(
            f"verified in {summary.verify_seconds:.1f} s: all {summary.series} series equal"
            " (row counts and checksums)"
        )
    return "\n".join(lines) + "\n"
