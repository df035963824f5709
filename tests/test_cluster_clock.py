"""Staleness on the store's clock: nodes whose wall clocks are a minute off either way, on one
PostgreSQL (tests/pgserver.py), look neither dead nor alive wrongly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio

from feedd.candle import Candle
from feedd.cluster import Cluster, NodeIdentity, wall_ms
from feedd.store.backend import ReadStore
from feedd.store.postgres import postgres_backend
from feedd.store.writer import Writer, WriterSettings

pytest_plugins = ["pgserver"]

#: how far the skewed nodes' clocks are off
SKEW_MS = 60_000


@asynccontextmanager
async def open_store(dsn: str) -> AsyncIterator[tuple[Writer, ReadStore]]:
    backend = postgres_backend(dsn)
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


def server_ms(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        return int(row.fetchone()[0])  # type: ignore[index]


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def by_id(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in cluster.document()}


async def test_skewed_clocks_neither_kill_nor_revive_a_node(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as (writer, reader):

        def node(role: str, clock: Callable[[], int], **kw: Any) -> Cluster:
            identity = NodeIdentity.of_this_process(role, wall_ms() / 1000)
            return Cluster(identity, writer, reader, lambda: {"health": "healthy"}, **kw,
                           clock=clock)  # fmt: skip

        behind = node("collector", lambda: wall_ms() - SKEW_MS)
        ahead = node("collector", lambda: wall_ms() + SKEW_MS)
        viewer = node("api", wall_ms)
        await behind.beat()
        await ahead.beat()
        await viewer.beat()
        now = server_ms(pg_dsn)
        # Both were heard a moment ago: fresh on every node, whatever its own clock says.
        for cluster in (viewer, behind, ahead):
            await cluster.beat()
            seen = by_id(cluster)
            assert len(seen) == 3
            for other in (behind, ahead, viewer):
                doc = seen[other.identity.node_id]
                assert doc["stale"] is False, (cluster.identity.role, doc)
                # Stamped by the server (a clock a minute off would show as a minute).
                assert abs(doc["last_heartbeat"] - now) < SKEW_MS / 4, doc
                assert doc["age_s"] < SKEW_MS / 4000

        # ``ahead`` dies. A fast-beating watcher marks it stale once the store's clock has
        # moved past the limit (before: its stamps from the future kept it alive a minute).
        monotonic = Monotonic()
        watcher = node("api", wall_ms, interval_s=0.2, monotonic=monotonic)
        await watcher.beat()
        assert by_id(watcher)[ahead.identity.node_id]["stale"] is False
        monotonic.now += 3 * 0.2 + 1.0
        dead = by_id(watcher)[ahead.identity.node_id]
        assert dead["stale"] is True and dead["age_s"] >= 1.6
