"""The export worker process: exports of many chunks equal the in-thread sqlite3 path byte for
byte, exports in progress share it, a client that goes away mid-export leaves nothing open in
it, a worker that dies mid-export ends the download with an error, and feedd stops it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from feedd import config as feedd_config
from feedd import exchanges
from feedd.errors import StoreError
from feedd.service import Service, run_service
from feedd.store import exportpool
from feedd.store.codec import encode
from feedd.store.export import CHUNK_ROWS, COLUMNS, Chunk
from feedd.store.exportchunks import ReadAhead
from feedd.store.exportpool import WORKER_SWITCH
from feedd.store.exportrequest import ExportRequest
from feedd.store.reader import Reader
from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST, connect_writer

EX, SYMBOL = "bybit_futures", "SOLUSDT"
T0 = 1_700_000_040_000 // 3_600_000 * 3_600_000
ROWS = CHUNK_ROWS * 5 + 1234  # six chunks, the last a short one
HEADER = (",".join(COLUMNS) + "\n").encode()


def _value(rng: random.Random, places: int) -> str:
    text = str(rng.randrange(10**7))
    return text if not places else f"{text[:-places] or '0'}.{text[-places:].rjust(places, '0')}"


def fill(db: Path, rows: int = ROWS) -> None:
    """One series of ``rows`` minutes: a fixed scale per column (the fast text path), one
    column with mixed scales and values below 1, missing trade counts, every source."""
    rng = random.Random(3)
    conn = connect_writer(db)
    conn.execute(
        "INSERT INTO series (exchange, symbol, interval) VALUES (?, ?, '1m')", (EX, SYMBOL)
    )
    (series,) = conn.execute("SELECT id FROM series").fetchone()
    flags = (FLAG_CLOSED, FLAG_CLOSED | FLAG_REST, FLAG_CLOSED | FLAG_ARCHIVE)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO candle_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                series,
                T0 + n * 60_000,
                *(encode(_value(rng, 2)) for _ in range(4)),
                encode(_value(rng, rng.choice((0, 3, 8)))),
                encode(_value(rng, 5)),
                None if n % 11 == 0 else rng.randrange(9000),
                flags[n % 3] if n < rows - 1 else 0,
            )
            for n in range(rows)
        ],
    )
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "ohlcv.db"
    fill(path)
    return path


def request(fmt: str, **window: int) -> ExportRequest:
    return ExportRequest(EX, SYMBOL, "1m", False, fmt, **window)


async def download(reader: Reader, wanted: ExportRequest) -> bytes:
    async with aclosing(reader.export(wanted)) as pieces:
        return b"".join([piece async for piece in pieces])


async def in_threads(reader: Reader, wanted: ExportRequest) -> bytes:
    os.environ[WORKER_SWITCH] = "0"
    try:
        return await download(reader, wanted)
    finally:
        del os.environ[WORKER_SWITCH]


def worker_pid(reader: Reader) -> int:
    worker = reader._exports._worker
    assert worker is not None
    return worker.process.pid


def open_files(pid: int, db: Path) -> list[str]:
    """The database's files the process has open (the file, its WAL and index)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(str(db)):
            found.append(target)
    return found


@pytest.mark.parametrize(
    "window",
    [
        {},
        {"since": T0 + 777 * 60_000, "until": T0 + 85_000 * 60_000},
        {"since": T0 + 60_000, "limit": CHUNK_ROWS * 2 + 17},  # a read ahead cut short
        {"limit": CHUNK_ROWS + 5},  # the newest rows
        {"since": T0 + ROWS * 60_000},  # nothing
    ],
)
async def test_worker_gives_the_bytes_of_the_sqlite3_path(db: Path, window: dict[str, int]) -> None:
    reader = Reader(db)
    try:
        for fmt in ("csv", "ndjson", "parquet"):
            expected = await in_threads(reader, request(fmt, **window))
            assert await download(reader, request(fmt, **window)) == expected, fmt
        text = await download(reader, request("csv", **window))
        assert text.startswith(HEADER)
        if not window:
            assert text.count(b"\n") == ROWS + 1
            parquet = await download(reader, request("parquet"))
            table = pq.read_table(pa.BufferReader(parquet))
            assert table.num_rows == ROWS and table.column_names == list(COLUMNS)
    finally:
        reader.close()


async def test_exports_in_progress_share_the_worker(db: Path) -> None:
    """One export waits, unread, after its first chunk while another runs to its end: the
    worker answers each in turn, and neither's bytes leak into the other."""
    reader = Reader(db)
    try:
        expected = await in_threads(reader, request("csv"))
        async with aclosing(reader.export(request("csv"))) as paused:
            first = await anext(paused)
            pid = worker_pid(reader)
            assert await download(reader, request("ndjson", limit=3)) == await in_threads(
                reader, request("ndjson", limit=3)
            )
            rest = b"".join([piece async for piece in paused])
        assert first + rest == expected
        assert worker_pid(reader) == pid
    finally:
        reader.close()


def mapped_files(pid: int) -> str:
    """Every file the process has mapped (its shared libraries among them), one a line."""
    with open(f"/proc/{pid}/maps") as maps:
        return "\n".join(line.split()[-1] for line in maps if "/" in line)


async def test_worker_loads_only_what_the_format_needs(db: Path) -> None:
    """numpy and pandas (which ADBC's DB-API layer and pyarrow pull in) never load in the
    worker, nor pyarrow's Parquet writer before a Parquet export: ~65 MB of its imports."""
    reader = Reader(db)
    try:
        await download(reader, request("csv"))
        maps = mapped_files(worker_pid(reader))
        for module in ("numpy/", "pandas/", "pyarrow/_dataset.", "pyarrow/_parquet."):
            assert module not in maps, module
        await download(reader, request("parquet", limit=3))
        assert "pyarrow/_parquet." in mapped_files(worker_pid(reader))
    finally:
        reader.close()


async def test_cancelled_export_is_dropped_by_the_worker(db: Path) -> None:
    """The way Quart ends a download whose client left: the send raises Cancelled and the
    body is closed. The worker drops that export (its connection is closed), stays up, and the
    next export is whole."""
    reader = Reader(db)
    try:
        with trio.CancelScope() as scope:
            async with aclosing(reader.export(request("parquet"))) as pieces:
                async for _ in pieces:
                    scope.cancel()
                    await trio.lowlevel.checkpoint()  # the send to the vanished client
        assert scope.cancelled_caught
        pid = worker_pid(reader)
        assert await download(reader, request("csv")) == await in_threads(reader, request("csv"))
        # the worker takes requests in order: the close came before that export
        assert worker_pid(reader) == pid
        assert open_files(pid, db) == []
    finally:
        reader.close()


async def test_worker_killed_mid_export_fails_it_and_is_replaced(db: Path) -> None:
    reader = Reader(db)
    try:
        with pytest.raises(StoreError, match=r"export worker stopped.*SIGKILL"):
            async with aclosing(reader.export(request("csv"))) as pieces:
                async for _ in pieces:
                    os.kill(worker_pid(reader), signal.SIGKILL)
        pid = worker_pid(reader)
        assert await download(reader, request("csv")) == await in_threads(reader, request("csv"))
        assert worker_pid(reader) != pid
    finally:
        reader.close()


async def test_worker_that_died_idle_is_replaced_at_the_next_export(db: Path) -> None:
    reader = Reader(db)
    try:
        await download(reader, request("csv", limit=1))
        worker = reader._exports._worker
        assert worker is not None
        worker.process.kill()
        await trio.to_thread.run_sync(worker.process.wait)
        assert await download(reader, request("csv")) == await in_threads(reader, request("csv"))
        assert worker_pid(reader) != worker.process.pid
    finally:
        reader.close()


async def test_idle_worker_exits_and_the_next_export_starts_another(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exportpool, "IDLE_EXIT_S", 0.2)
    reader = Reader(db)
    try:
        await download(reader, request("csv", limit=1))
        worker = reader._exports._worker
        assert worker is not None
        with trio.fail_after(30):
            exited = await trio.to_thread.run_sync(worker.process.wait, abandon_on_cancel=True)
        assert exited == 0  # by itself
        assert await download(reader, request("csv", limit=3)) == await in_threads(
            reader, request("csv", limit=3)
        )
        assert worker_pid(reader) != worker.process.pid
    finally:
        reader.close()


async def test_export_asked_of_a_worker_as_it_stops_is_asked_again(db: Path) -> None:
    """The worker is alive when the export is asked of it and gone before it answers (as when
    it stops itself, idle, at that moment): the export goes to another worker, whole."""
    reader = Reader(db)
    try:
        await download(reader, request("csv", limit=1))
        pid = worker_pid(reader)
        os.kill(pid, signal.SIGSTOP)
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _collect(reader, request("csv"), got))
            await trio.testing.wait_all_tasks_blocked()  # asked, waiting for the answer
            os.kill(pid, signal.SIGKILL)
        assert got == [await in_threads(reader, request("csv"))]
        assert worker_pid(reader) != pid
    finally:
        reader.close()


async def _collect(reader: Reader, wanted: ExportRequest, into: list[bytes]) -> None:
    into.append(await download(reader, wanted))


async def test_missing_database_exports_empty_files(tmp_path: Path) -> None:
    reader = Reader(tmp_path / "none.db")
    try:
        for resampled in (False, True):
            wanted = ExportRequest(EX, SYMBOL, "1h" if resampled else "1m", resampled, "csv")
            assert await download(reader, wanted) == HEADER
            assert await download(reader, attrs.evolve(wanted, format="ndjson")) == b""
            parquet = await download(reader, attrs.evolve(wanted, format="parquet"))
            assert pq.read_table(pa.BufferReader(parquet)).num_rows == 0
    finally:
        reader.close()


async def test_unreadable_database_fails_the_export_not_the_worker(tmp_path: Path) -> None:
    bad = tmp_path / "ohlcv.db"
    bad.write_bytes(b"this is not a database" * 500)
    reader = Reader(bad)
    try:
        with pytest.raises(StoreError, match=f"cannot read {bad}.*not a database"):
            await download(reader, request("csv"))
        pid = worker_pid(reader)
        bad.unlink()
        assert await download(reader, request("csv")) == HEADER  # a missing file is empty
        parquet = await download(reader, request("parquet"))
        assert pq.read_table(pa.BufferReader(parquet)).num_rows == 0
        assert worker_pid(reader) == pid
    finally:
        reader.close()


async def test_an_export_holds_back_no_checkpoint(db: Path) -> None:
    """Between chunks the worker holds no read transaction: a paused export would otherwise
    keep the writer from truncating the WAL."""
    reader = Reader(db)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        async with aclosing(reader.export(request("csv"))) as pieces:
            await anext(pieces)
            await anext(pieces)  # the worker has read ahead by now
            writer.execute("UPDATE candle_rows SET trades = 1 WHERE open_time = ?", (T0,))
            busy, _, _ = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
    finally:
        writer.close()
        reader.close()


async def test_closing_the_reader_stops_the_worker(db: Path) -> None:
    reader = Reader(db)
    await download(reader, request("csv", limit=1))
    worker = reader._exports._worker
    assert worker is not None
    reader.close()
    assert worker.process.returncode is not None
    with pytest.raises(StoreError, match="closed"):
        await download(reader, request("csv", limit=1))


class Minutes:
    """A ``ChunkReader`` of ``count`` rows numbered from 0, recording what it was asked."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.next = 0
        self.asked: list[int] = []
        self.closed = False

    def read(self, budget: int) -> Chunk | None:
        self.asked.append(budget)
        rows = list(range(self.next, min(self.count, self.next + budget)))
        if not rows:
            return None
        self.next += len(rows)
        ints = pa.array(rows, pa.int64())
        strings = pa.array(["ws"] * len(rows))
        return Chunk(ints, (ints,) * 6, ints, pa.array([True] * len(rows)), strings, True)

    def close(self) -> None:
        self.closed = True


def test_read_ahead_keeps_the_rows_a_smaller_ask_leaves() -> None:
    source = Minutes(100)
    with ThreadPoolExecutor(1) as pool:
        ahead = ReadAhead(source, pool)
        got = []
        for budget in (30, 5, 40, 40, 40, 40):
            chunk = ahead.read(budget)
            if chunk is None:
                break
            assert len(chunk) <= budget
            got += chunk.open_time.to_pylist()
        ahead.close()
    assert got == list(range(100))
    assert source.closed


@asynccontextmanager
async def serving(db: Path) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """feedd with every exchange disabled on ``db``."""
    config = feedd_config.parse(
        {
            "exchanges": {name: {"enabled": False, "symbols": []} for name in exchanges.REGISTRY},
            "port": 0,
        }
    ).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, config, db)
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


URL = f"/ohlcv/{EX}/{SYMBOL}/1m"


async def test_http_client_leaving_mid_download(db: Path) -> None:
    async with serving(db) as (service, client):
        expected = (await client.get(URL, params={"format": "csv"})).content
        reader = service.state.reader
        assert isinstance(reader, Reader)
        pid = worker_pid(reader)
        async with client.stream("GET", URL, params={"format": "csv"}) as response:
            async for _ in response.aiter_raw():
                break  # and the connection is closed, mid-download
        again = await client.get(URL, params={"format": "csv"})
        assert again.content == expected and again.content.count(b"\n") == ROWS + 1
        assert worker_pid(reader) == pid


async def test_http_download_fails_visibly_when_the_worker_dies(db: Path) -> None:
    """Not a shorter file: the chunked body ends without its last chunk, which clients
    report as an error."""
    async with serving(db) as (service, client):
        reader = service.state.reader
        assert isinstance(reader, Reader)
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", URL, params={"format": "csv"}) as response:
                assert response.status_code == 200
                async for piece in response.aiter_raw():
                    if not received:
                        os.kill(worker_pid(reader), signal.SIGKILL)
                    received += piece
        assert 0 < received.count(b"\n") < ROWS + 1
        after = await client.get(URL, params={"format": "csv"})
        assert after.content.count(b"\n") == ROWS + 1
