"""Nodes over both backends, and on PostgreSQL (a real server, tests/pgserver.py): heartbeat
rows, a dropped connection, and a collector and an API node sharing one database: the API
node serves what the collector ingested, opens no venue session, and /status lists both."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import trio
from e2e import feedd_config

from feedd.candle import Candle
from feedd.errors import StoreError
from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.backend import Backend, open_backend
from feedd.store.nodes import KEEP_MS, NodeRecord
from feedd.store.postgres import nodes as pg_nodes
from feedd.store.postgres import postgres_backend
from feedd.store.postgres.backend import PostgresBackend
from feedd.store.writer import Writer, WriterSettings

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["store_backends"]

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
T0 = 1_700_000_000_000


def read_nodes(dsn: str) -> list[NodeRecord]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return pg_nodes.read(conn)


async def test_nodes_through_the_store_interface(backend: Backend) -> None:
    """Both backends: an uncreated store reads no node; heartbeats upsert, newest first, each
    stamped with the store's clock (the stamp returned), ties in id order."""
    backend.prepare()
    reader = backend.open_reader()
    try:
        assert await reader.nodes() == []
        db = backend.open_writer(busy_timeout_ms=2000)
        try:
            before = db_now(backend)
            db.record_node("b", '{"role": "api"}', before)
            a = db.record_node("a", '{"role": "collector"}', before + 5)
            b = db.record_node("b", '{"role": "api", "n": 2}', before + 10)
        finally:
            db.close()
        assert before <= a <= b <= db_now(backend) + 10  # SQLite stamps with the given clock
        # Newest first; the server's clock may stamp both in one millisecond: then by id.
        expected = [
            NodeRecord("b", b, '{"role": "api", "n": 2}'),
            NodeRecord("a", a, '{"role": "collector"}'),
        ]
        assert await reader.nodes() == sorted(expected, key=lambda n: (-n.at_ms, n.node_id))
    finally:
        reader.close()


def db_now(backend: Backend) -> int:
    """The store's clock: the server's on PostgreSQL, this machine's on SQLite."""
    if not isinstance(backend, PostgresBackend):
        return int(time.time() * 1000)
    with psycopg.connect(backend.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT " + pg_nodes.NOW_MS).fetchone()
        assert row is not None
        return int(row[0])


def test_heartbeat_rows_upsert_and_expire(pg_dsn: str) -> None:
    """Stamped by the server whatever the node's clock says; a row a day old goes."""
    db = postgres_backend(pg_dsn).open_writer(busy_timeout_ms=2000)
    try:
        a1 = db.record_node("a", '{"n": 1}', T0)
        b1 = db.record_node("b", '{"n": 2}', T0 + 1000)
        a2 = db.record_node("a", '{"n": 3}', T0 + 2000)
        assert a1 <= b1 <= a2 and abs(a2 - int(time.time() * 1000)) < 60_000
        assert read_nodes(pg_dsn) == [
            NodeRecord("a", a2, '{"n": 3}'),
            NodeRecord("b", b1, '{"n": 2}'),
        ]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            # b's last beat a day old minus a minute: kept; a day and a minute: gone.
            conn.execute("UPDATE nodes SET at_ms = %s WHERE id = 'b'", (a2 - KEEP_MS + 60_000,))
            db.record_node("a", "{}", 0)
            assert [r.node_id for r in read_nodes(pg_dsn)] == ["a", "b"]
            conn.execute("UPDATE nodes SET at_ms = %s WHERE id = 'b'", (a2 - KEEP_MS - 60_000,))
            db.record_node("a", "{}", 0)
            assert [r.node_id for r in read_nodes(pg_dsn)] == ["a"]
    finally:
        db.close()


async def test_collector_and_api_node_on_one_database(tmp_path: Path, pg_dsn: str) -> None:
    storage = {"backend": "postgresql", "dsn": pg_dsn}
    async with open_simulator(SimSettings(venues=(EX,))) as sim:
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        configs = {
            role: feedd_config(sim, {EX: SYMBOLS}, role=role, storage=storage)
            for role in ("collector", "api")
        }
        async with trio.open_nursery() as nursery:
            nodes: dict[str, Service] = {}
            for role, cfg in configs.items():
                backend = open_backend(cfg.storage, tmp_path)
                nodes[role] = await nursery.start(functools.partial(run_service, cfg, backend))
            collector, api = nodes["collector"], nodes["api"]
            try:
                async with (
                    httpx.AsyncClient(base_url=api.url, timeout=30) as reads,
                    httpx.AsyncClient(base_url=collector.url, timeout=30) as collecting,
                ):
                    # Closed candles of two minutes after start, for both symbols, through the
                    # API node: checked after each of the collector's commits.
                    wanted = start + 2 * MINUTE_MS
                    closed: dict[str, list[dict[str, object]]] = {}
                    with trio.fail_after(60), collector.state.writer.open_commit_listener() as c:
                        while True:
                            for symbol in SYMBOLS:
                                page = await reads.get(
                                    f"/ohlcv/{EX}/{symbol}/1m", params={"since": start}
                                )
                                assert page.status_code == 200, page.text
                                closed[symbol] = [x for x in page.json() if x["closed"]]
                            if all(
                                rows and rows[-1]["open_time"] >= wanted for rows in closed.values()
                            ):
                                break
                            await c.receive()
                    for symbol in SYMBOLS:
                        truth = {t.open_time: t for t in sim.truth(EX, symbol, "1m", start, wanted)}
                        served = {row["open_time"]: row for row in closed[symbol]}
                        for open_time, candle in truth.items():
                            assert open_time in served, (symbol, open_time)
                            assert served[open_time]["close"] == float(candle.close)
                            assert served[open_time]["volume"] == float(candle.volume)

                    # Both nodes heartbeat into the one database; each sees the other.
                    await collector.state.cluster.beat()  # type: ignore[union-attr]
                    await api.state.cluster.beat()  # type: ignore[union-attr]
                    status = (await reads.get("/status")).json()
                    assert status["role"] == "api"
                    listed = {n["role"]: n for n in status["cluster"]}
                    assert set(listed) == {"collector", "api"}
                    assert not any(n["stale"] for n in status["cluster"])
                    assert listed["api"]["self"] and not listed["collector"]["self"]
                    assert listed["api"]["exchanges"] == {}
                    assert listed["collector"]["exchanges"][EX]["state"] == "live"
                    assert listed["collector"]["exchanges"][EX]["connections"] >= 1
                    ids = {n["node_id"] for n in status["cluster"]}
                    cluster = collector.state.cluster
                    assert cluster is not None and cluster.identity.node_id in ids
                    # The collector serves its status only.
                    assert (await collecting.get(f"/ohlcv/{EX}/BTCUSDT/1m")).status_code == 404
                    assert (await collecting.get("/status")).status_code == 200
                    # Only the collector has sessions with the venue (each reconnect is one more).
                    ex = collector.state.supervisor.stats[EX]
                    opened = ex.reconnects + ex.rotations + 1
                    assert sim.venues[EX].stats["ws_connections"] == opened
            finally:
                for service in nodes.values():
                    service.stop.set()
    # The clean stops said goodbye in the shared table.
    states = {r.node_id: r.doc for r in read_nodes(pg_dsn)}
    assert len(states) == 2 and all('"state":"stopped"' in doc for doc in states.values())


async def test_heartbeats_reconnect_after_the_server_drops_the_connection(
    pg_server: PgServer, pg_dsn: str
) -> None:
    """An API node commits no candles, so no failed commit replaces a broken connection: the
    heartbeat must. (Before: every later heartbeat failed on the dead connection.)"""
    writer = Writer(WriterSettings(postgres_backend(pg_dsn), 50, 1000))
    send, recv = trio.open_memory_channel[list[Candle]](1)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await writer.record_node("a", "{}", T0)
        assert pg_server.terminate(urlsplit(pg_dsn).path.lstrip("/")) >= 1
        with pytest.raises(StoreError):
            await writer.record_node("a", "{}", T0 + 1)
        stamp = await writer.record_node("a", '{"back": true}', T0 + 2)
        await send.aclose()
    assert read_nodes(pg_dsn) == [NodeRecord("a", stamp, '{"back": true}')]
