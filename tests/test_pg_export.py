"""PostgreSQL exports against a real server: pages add up to the whole file, a client that
leaves mid-export leaves its connection clean in the pool, and a server lost mid-export ends
the download in an error, never in a shorter file that looks whole."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
import trio

from feedd import config as feedd_config
from feedd import exchanges
from feedd.candle import Candle, Source
from feedd.errors import StoreError
from feedd.service import Service, run_service
from feedd.store.exportrequest import ExportRequest
from feedd.store.postgres import export as pg_export
from feedd.store.postgres import exportcopy, postgres_backend
from feedd.store.postgres.reader import PgReader

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

EX, SYMBOL = "binance_futures", "BTCUSDT"
T0 = 1_714_348_800_000
PAGE = 1_000
ROWS = PAGE * 5 + 321  # six pages, the last a short one
URL = f"/ohlcv/{EX}/{SYMBOL}/1m"


@pytest.fixture
def dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(pg_export, "CHUNK_ROWS", PAGE)
    backend = postgres_backend(pg_dsn)
    writer = backend.open_writer(busy_timeout_ms=2000)
    try:
        sources = (Source.WS, Source.REST, Source.ARCHIVE)
        writer.write(
            [
                Candle(EX, SYMBOL, "1m", T0 + n * 60_000, f"{n}.50", "60000.10", "0.00000005",
                       str(n), "12.000", "0", None if n % 7 == 0 else n, n < ROWS - 1,
                       sources[n % 3])
                for n in range(ROWS)
            ]
        )  # fmt: skip
    finally:
        writer.close()
    yield pg_dsn


def request(fmt: str) -> ExportRequest:
    return ExportRequest(EX, SYMBOL, "1m", False, fmt)


async def download(reader: PgReader, wanted: ExportRequest) -> bytes:
    return b"".join([piece async for piece in reader.export(wanted)])


def reader_states(pg_server: PgServer) -> list[tuple[str, str]]:
    """State and transaction state of every reader connection on the server."""
    rows = pg_server.admin(
        "SELECT state, backend_xid IS NULL FROM pg_stat_activity"
        " WHERE application_name = 'feedd-reader'"
    )
    return [(str(state), str(no_xid)) for state, no_xid in rows]


def closed(link: Any) -> bool:
    return bool(link.status == psycopg.pq.ConnStatus.BAD)


async def test_every_page_arrives_once_in_order(dsn: str) -> None:
    reader = PgReader(dsn)
    try:
        csv = (await download(reader, request("csv"))).decode().splitlines()
        assert csv[0].startswith("open_time,") and len(csv) == ROWS + 1
        assert [int(line.split(",", 1)[0]) for line in csv[1:]] == [
            T0 + n * 60_000 for n in range(ROWS)
        ]
        assert csv[1] == f"{T0},0.50,60000.10,0.00000005,0,12.000,0,,true,ws"
        assert csv[-1].endswith(",false,rest")
        ndjson = (await download(reader, request("ndjson"))).splitlines()
        assert len(ndjson) == ROWS and ndjson[2].endswith(
            b',"trades":2,"closed":true,"source":"archive"}'
        )
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_dense_rows_and_holes_arrive_once_in_order(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Pages are windows of open time a page of intervals wide, asked for ahead: a window
    with more rows than a page (open times closer than the interval) is read to its end, and
    windows in a hole give nothing, between pages that keep their order."""
    monkeypatch.setattr(pg_export, "CHUNK_ROWS", PAGE)
    times = [T0 + n * 1_000 for n in range(2_500)]  # 2.5 pages in 42 minutes: one window
    times += [T0 + 10 * PAGE * 60_000 + n * 60_000 for n in range(2_345)]  # after 9 empty
    writer = postgres_backend(pg_dsn).open_writer(busy_timeout_ms=2000)
    try:
        writer.write(
            [
                Candle(EX, SYMBOL, "1m", t, "1.5", "2", "1", "1.25", "3", "4", n, True,
                       Source.WS)
                for n, t in enumerate(times)
            ]
        )  # fmt: skip
    finally:
        writer.close()
    reader = PgReader(pg_dsn)
    try:
        data = await download(reader, request(fmt))
    finally:
        reader.close()
    if fmt == "csv":
        got = [int(line.split(b",", 1)[0]) for line in data.splitlines()[1:]]
    else:
        got = pq.read_table(io.BytesIO(data)).column("open_time").to_pylist()
    assert got == times


async def test_client_leaving_mid_export_returns_the_connection_clean(
    dsn: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The way Quart ends a download whose client left: the send raises Cancelled, the body
    is closed. Here the cancel comes while the second page is read in the worker thread: that
    page's read finishes (trio does not abandon the thread), nothing more is asked, the pooled
    connection goes back idle, outside any transaction, and the export's own connections
    (pages asked for ahead) are let go, which closes them."""
    reader = PgReader(dsn, max_connections=1)
    pages = -1  # not counting yet
    scope = trio.CancelScope()
    real_take, real_open = exportcopy.take_page, pg_export.open_sibling
    links: list[Any] = []

    def page_then_cancel(*args: Any) -> Any:
        nonlocal pages
        pages += pages >= 0
        if pages == 2:
            trio.from_thread.run_sync(scope.cancel)
        return real_take(*args)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        link = real_open(*args, **kwargs)
        links.append(link)
        return link

    monkeypatch.setattr(exportcopy, "take_page", page_then_cancel)
    monkeypatch.setattr(pg_export, "open_sibling", recorded)
    try:
        expected = await download(reader, request("csv"))
        assert len(links) == pg_export.CONNECTIONS and all(closed(link) for link in links)
        pages, links = 0, []
        received = b""
        with scope:
            async with aclosing(reader.export(request("csv"))) as pieces:
                async for piece in pieces:
                    received += piece
        assert scope.cancelled_caught and pages == 2
        assert received == expected[: len(received)] and received.count(b"\n") == 2 * PAGE + 1
        assert len(links) == pg_export.CONNECTIONS and all(closed(link) for link in links)
        assert reader_states(pg_server) == [("idle", "True")]
        (conn,) = reader._idle
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert await download(reader, request("csv")) == expected  # on the same connection
        assert reader._idle == [conn]
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
async def test_server_lost_mid_export_is_an_error(dsn: str, pg_server: PgServer, fmt: str) -> None:
    reader = PgReader(dsn)
    try:
        received = b""
        with pytest.raises(StoreError, match="cannot"):
            async for piece in reader.export(request(fmt)):
                if not received:
                    pg_server.stop()
                received += piece
        assert received  # the first page came, then the error
    finally:
        reader.close()


@asynccontextmanager
async def serving(dsn: str) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """feedd with every exchange disabled on the PostgreSQL database ``dsn``."""
    config = feedd_config.parse(
        {
            "exchanges": {name: {"enabled": False, "symbols": []} for name in exchanges.REGISTRY},
            "port": 0,
        }
    ).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, config, postgres_backend(dsn))
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


async def test_http_client_leaving_mid_download(dsn: str, pg_server: PgServer) -> None:
    async with serving(dsn) as (_, client):
        expected = (await client.get(URL, params={"format": "ndjson"})).content
        async with client.stream("GET", URL, params={"format": "ndjson"}) as response:
            async for _ in response.aiter_raw():
                break  # and the connection is closed, mid-download
        again = await client.get(URL, params={"format": "ndjson"})
        assert again.content == expected and again.content.count(b"\n") == ROWS
        assert all(state == "idle" for state, _ in reader_states(pg_server))


async def test_http_download_fails_visibly_when_the_server_goes(
    dsn: str, pg_server: PgServer
) -> None:
    """Not a shorter file: the chunked body ends without its last chunk, which clients
    report as an error."""
    async with serving(dsn) as (_, client):
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", URL, params={"format": "csv"}) as response:
                assert response.status_code == 200
                async for piece in response.aiter_raw():
                    if not received:
                        pg_server.stop()
                    received += piece
        assert 0 < received.count(b"\n") < ROWS + 1
        pg_server.start()
        after = await client.get(URL, params={"format": "csv"})
        assert after.content.count(b"\n") == ROWS + 1
