"""Wipes of a shared store told through the heartbeats (feedd/cluster.py): a node learns of a
wipe another node announced, never of its own, and the store's row is no node of /status."""

from __future__ import annotations

from pathlib import Path

import trio
from test_cluster_nodes import Clock, open_store

from feedd.cluster import Cluster, NodeIdentity, StoreEpochs
from feedd.store.nodes import WIPE_ID

T0 = 1_700_000_000_000


async def test_a_wipe_is_news_to_the_other_nodes_only(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "ohlcv.db") as (writer, reader):
        epochs = {name: StoreEpochs(writer) for name in "ab"}
        a, b = (
            Cluster(
                NodeIdentity.of_this_process("all", T0 / 1000), writer, reader,
                lambda: {}, clock=clock, epochs=epochs[name],
            )
            for name in "ab"
        )  # fmt: skip
        await a.beat()
        await b.beat()
        generation = epochs["b"].generation
        await a.announce_wipe()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # b's engine is waiting for the store to lose its history (feedd/engine).
                async def rebootstrap() -> None:
                    assert await epochs["b"].wait_recreated(generation) == generation + 1

                nursery.start_soon(rebootstrap)
                await a.beat()
                await b.beat()
        assert (epochs["a"].wipes, epochs["b"].wipes) == (0, 1)
        assert await epochs["b"].wait_wiped(0) == 1
        # Seen once: later beats are no news, and the row is nobody's node.
        await b.beat()
        assert epochs["b"].wipes == 1
        assert all(n["node_id"] != WIPE_ID for n in b.document())
        assert len(b.document()) == 2
        # A node starting after the wipe takes the token as it finds it.
        c_epochs = StoreEpochs(writer)
        c = Cluster(NodeIdentity.of_this_process("api", T0 / 1000), writer, reader, lambda: {},
                    clock=clock, epochs=c_epochs)  # fmt: skip
        await c.beat()
        await c.beat()
        assert c_epochs.wipes == 0
        # b wipes too: news to a and c.
        await b.announce_wipe()
        for node in (a, b, c):
            await node.beat()
        assert (epochs["a"].wipes, epochs["b"].wipes, c_epochs.wipes) == (1, 1, 1)
