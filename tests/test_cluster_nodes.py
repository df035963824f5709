"""Heartbeats on SQLite: rows saved and pruned, nodes going stale, /status's cluster."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import trio
from e2e import running_feedd

from feedd.candle import Candle
from feedd.cluster import HEARTBEAT_S, STALE_BEATS, Cluster, NodeIdentity
from feedd.store import nodes
from feedd.store.reader import Reader
from feedd.store.schema import connect_writer
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings

EX = "binance_futures"
T0 = 1_700_000_000_000


def test_record_upserts_and_forgets_nodes_silent_for_a_day(tmp_path: Path) -> None:
    conn = connect_writer(tmp_path / "ohlcv.db")
    try:
        nodes.record(conn, "a", '{"n": 1}', T0)
        nodes.record(conn, "b", '{"n": 2}', T0 + 1000)
        nodes.record(conn, "a", '{"n": 3}', T0 + 2000)
        assert nodes.read(conn) == [
            nodes.NodeRecord("a", T0 + 2000, '{"n": 3}'),
            nodes.NodeRecord("b", T0 + 1000, '{"n": 2}'),
        ]
        # b's last beat is exactly a day old: kept; a millisecond more and it is gone.
        nodes.record(conn, "a", "{}", T0 + 1000 + nodes.KEEP_MS)
        assert [r.node_id for r in nodes.read(conn)] == ["a", "b"]
        nodes.record(conn, "a", "{}", T0 + 1001 + nodes.KEEP_MS)
        assert [r.node_id for r in nodes.read(conn)] == ["a"]
    finally:
        conn.close()


def test_an_older_store_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ohlcv.db"
    connect_writer(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE nodes")
    raw.commit()
    raw.close()
    conn = connect_writer(path)
    try:
        nodes.record(conn, "a", "{}", T0)
        assert len(nodes.read(conn)) == 1
    finally:
        conn.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[tuple[Writer, Reader]]:
    backend = SqliteBackend(path)
    writer = Writer(WriterSettings(backend, 50, 1000))
    reader = backend.open_reader()
    send, recv = trio.open_memory_channel[list[Candle]](1)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, recv)
            yield writer, reader
            await send.aclose()
    finally:
        reader.close()


def node_status(exchange_state: str) -> dict[str, object]:
    return {"health": "healthy", "exchanges": {EX: {"state": exchange_state}}}


async def test_heartbeats_appear_and_go_stale(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "ohlcv.db") as (writer, reader):
        a_id = NodeIdentity.of_this_process("collector", T0 / 1000)
        b_id = NodeIdentity.of_this_process("api", T0 / 1000)
        assert a_id.node_id != b_id.node_id
        # SQLite stamps with this machine's clock; between beats ages grow on the monotonic
        # clock (frozen here, so that the limits below are exact).
        monotonic = Monotonic()
        a = Cluster(
            a_id, writer, reader, lambda: node_status("live"), clock=clock, monotonic=monotonic
        )
        b = Cluster(
            b_id, writer, reader, lambda: {"health": "healthy"}, clock=clock, monotonic=monotonic
        )
        await a.beat()
        assert [n["node_id"] for n in a.document()] == [a_id.node_id]
        clock.now += 1000
        await b.beat()
        seen = {n["node_id"]: n for n in b.document()}
        assert set(seen) == {a_id.node_id, b_id.node_id}
        first = seen[a_id.node_id]
        assert first["role"] == "collector" and first["exchanges"] == {EX: {"state": "live"}}
        assert first["self"] is False and seen[b_id.node_id]["self"] is True
        assert first["host"] == a_id.host and first["pid"] == a_id.pid
        assert first["last_heartbeat"] == T0 and first["age_s"] == 1.0
        assert not first["stale"]

        # a falls silent; b keeps beating. Three intervals of silence are not yet stale...
        limit = int(STALE_BEATS * HEARTBEAT_S * 1000)
        clock.now = T0 + limit
        await b.beat()
        assert not {n["node_id"]: n for n in b.document()}[a_id.node_id]["stale"]
        # ...a moment more is.
        clock.now = T0 + limit + 1
        await b.beat()
        seen = {n["node_id"]: n for n in b.document()}
        assert seen[a_id.node_id]["stale"] is True
        assert seen[b_id.node_id]["stale"] is False
        # a comes back: fresh again.
        await a.beat()
        await b.beat()
        assert not any(n["stale"] for n in b.document())
        # Silence after b's last beat ages a on b's view too, without a beat of b's.
        monotonic.now += limit / 1000 + 0.001
        assert {n["node_id"]: n for n in b.document()}[a_id.node_id]["stale"] is True
        await a.beat()
        await b.beat()
        # A node that said goodbye is stopped, never stale.
        await a.beat("stopped")
        clock.now += 10 * limit
        await b.beat()
        seen = {n["node_id"]: n for n in b.document()}
        assert seen[a_id.node_id]["state"] == "stopped"
        assert seen[a_id.node_id]["stale"] is False


async def test_status_lists_this_node_and_marks_a_silent_one(tmp_path: Path) -> None:
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, {EX: ["BTCUSDT"]}) as (_sim, service, client):
        cluster = service.state.cluster
        assert cluster is not None
        (me,) = (await client.get("/status")).json()["cluster"]
        assert me["self"] is True and me["role"] == "all" and me["state"] == "running"
        assert me["node_id"] == cluster.identity.node_id
        assert set(me["exchanges"]) == {EX} and me["writer"]["healthy"] is True
        assert me["stale"] is False and me["version"]
        # Another node, heard from a minute ago, then silent.
        conn = connect_writer(db)
        old = {"role": "collector", "host": "elsewhere", "state": "running"}
        nodes.record(conn, "gone", orjson.dumps(old).decode(), me["last_heartbeat"] - 60_000)
        conn.close()
        await cluster.beat()
        listed = {n["node_id"]: n for n in (await client.get("/status")).json()["cluster"]}
        assert listed["gone"]["stale"] is True and listed["gone"]["host"] == "elsewhere"
        assert listed[me["node_id"]]["stale"] is False
        # Once the exchange is live the heartbeat says so.
        await service.state.writer.wait_committed(lambda: service.state.writer.stats.committed > 0)
        await cluster.beat()
        listed = {n["node_id"]: n for n in (await client.get("/status")).json()["cluster"]}
        assert listed[me["node_id"]]["exchanges"][EX]["connections"] >= 1
    # A clean stop leaves a goodbye: the row says stopped.
    conn = connect_writer(db)
    try:
        rows = {r.node_id: orjson.loads(r.doc) for r in nodes.read(conn)}
    finally:
        conn.close()
    assert rows[me["node_id"]]["state"] == "stopped"
