"""What the session relies on in trio-websocket beyond its public API, and why.

trio-websocket 0.12 hands out one message per ``get_message()``; the session also takes what
is already queued from the library's private ``_recv_channel`` (``session.message_queue``),
so that a burst of frames costs one wake-up and one channel send, and the library's queue
keeps room to answer pings. These tests fail loudly when a new version moves that queue.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import trio
import trio.testing
import trio_websocket
from fakes import FakeVenue, kline_frame, make_context
from packaging.requirements import Requirement

from feedd.candle import Candle
from feedd.engine import ws as engine_ws
from feedd.engine.connector_tws import TrioWebsocketConnection
from feedd.engine.session import MAX_BURST, Session, message_queue
from feedd.engine.ws import unwrapped_nursery
from feedd.exchanges.contract import Stream

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
BTC = Stream("BTCUSDT", "1m")
T0 = 1_700_000_040_000


@asynccontextmanager
async def ws_pair() -> AsyncIterator[
    tuple[trio_websocket.WebSocketConnection, trio_websocket.WebSocketConnection]
]:
    """A client (configured as engine/ws.py configures it) and its server, in memory."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server_ready: trio.MemorySendChannel[trio_websocket.WebSocketConnection]
    server_ready, server_got = trio.open_memory_channel(1)

    async def serve() -> None:
        request = await trio_websocket.wrap_server_stream(nursery, server_stream)  # type: ignore[arg-type]
        await server_ready.send(await request.accept())

    async with unwrapped_nursery() as nursery:
        nursery.start_soon(serve)
        client = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "fake",
            "/",
            message_queue_size=engine_ws.MESSAGE_QUEUE_SIZE,
            max_message_size=engine_ws.MAX_MESSAGE_SIZE,
            receive_buffer_size=65536,
        )
        server = await server_got.receive()
        yield client, server
        nursery.cancel_scope.cancel()


def test_the_pin_is_bounded_and_installed() -> None:
    """A new minor version must be checked against this file before the bound moves."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [requirement] = [Requirement(d) for d in deps if Requirement(d).name == "trio-websocket"]
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier)
    assert requirement.specifier.contains(importlib.metadata.version("trio-websocket"))


async def test_the_private_queue_is_where_get_message_reads() -> None:
    async with ws_pair() as (client, server):
        queue = message_queue(client)
        assert queue is not None, "trio-websocket moved _recv_channel: see session.message_queue"
        for name in ("receive_nowait", "statistics"):
            assert callable(getattr(queue, name)), name
        for i in range(3):
            await server.send_message(f"m{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().current_buffer_used == 3
        # the same queue, in order, shared with get_message()
        assert await client.get_message() == "m0"
        assert queue.receive_nowait() == "m1"
        assert await client.get_message() == "m2"
        try:
            queue.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            raise AssertionError("an empty queue must raise WouldBlock")
        # a peer's close ends the queue the way the read loop expects
        await server.aclose()
        await trio.testing.wait_all_tasks_blocked()
        try:
            queue.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        else:
            raise AssertionError("a closed connection must end the queue")


async def test_a_burst_is_read_in_one_wake_up_while_pings_are_answered() -> None:
    """What the private queue is for: 200 frames arriving together reach the writer in a
    couple of batches, not 200; while the consumer is blocked the library keeps answering
    pings (its queue has room: a full one stops the connection's reader)."""
    frames = 200
    assert frames < min(MAX_BURST, engine_ws.MESSAGE_QUEUE_SIZE)
    ctx, _, _ = make_context(FakeVenue())
    # unbuffered: the session blocks on its first batch until the test takes it
    candles_send, candles_recv = trio.open_memory_channel[list[Candle]](0)
    ctx.candles_send = candles_send
    server_side: trio.MemorySendChannel[trio_websocket.WebSocketConnection]
    server_side, server_got = trio.open_memory_channel(1)

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[TrioWebsocketConnection]:
        async with ws_pair() as (client, server):
            await server_side.send(server)
            yield TrioWebsocketConnection(client)

    ctx.connect = connect

    async def ack(server: trio_websocket.WebSocketConnection) -> None:
        request = orjson.loads(await server.get_message())
        await server.send_message(orjson.dumps({"result": None, "id": request["id"]}).decode())

    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC,), frozenset())
        nursery.start_soon(session.run)
        server = await server_got.receive()
        await ack(server)
        for i in range(frames):
            frame = kline_frame("BTCUSDT", T0, closed=False)
            await server.send_message(frame.replace('"o":"100.0"', f'"o":"{i}"'))
        with trio.fail_after(10):
            await server.ping(b"still there?")
        batches = []
        while sum(map(len, batches)) < frames:
            batches.append(await candles_recv.receive())
        assert [c.open for batch in batches for c in batch] == [str(i) for i in range(frames)]
        assert len(batches) <= 3, [len(b) for b in batches]
        session.cancel()
