"""The trio-websocket connector: the library's reader task parses frames and queues whole
messages; a batch is the first message awaited plus what is already queued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from feedd.engine import ws as engine_ws
from feedd.errors import TransportError

NAME = "trio-websocket"
#: most messages taken off the library's queue per batch
MAX_BATCH = 256


class TrioWebsocketConnection:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self._queued = message_queue(ws)

    async def receive_batch(self) -> list[str | bytes]:
        try:
            messages = [await self.ws.get_message()]
        except trio_websocket.ConnectionClosed as exc:
            raise closed_error(exc) from exc
        queued = self._queued
        if queued is not None:
            # trio-websocket hands out one message per await, each a trip through the
            # scheduler; what is already queued is taken in one go.
            while len(messages) < MAX_BATCH:
                try:
                    messages.append(queued.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break  # an ended connection is reported by the next get_message()
        return messages

    async def send(self, message: str) -> None:
        try:
            await self.ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise closed_error(exc) from exc


def closed_error(exc: trio_websocket.ConnectionClosed) -> TransportError:
    return TransportError(f"connection closed by the exchange: {exc.reason}")


@asynccontextmanager
async def open_connection(url: str) -> AsyncIterator[TrioWebsocketConnection]:
    async with engine_ws.open_websocket(url, max_message_size=engine_ws.MAX_MESSAGE_SIZE) as ws:
        yield TrioWebsocketConnection(ws)


@asynccontextmanager
async def wrap_stream(
    stream: trio.abc.Stream, host: str, resource: str
) -> AsyncIterator[TrioWebsocketConnection]:
    async with engine_ws.unwrapped_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            host,
            resource,
            message_queue_size=engine_ws.MESSAGE_QUEUE_SIZE,
            max_message_size=engine_ws.MAX_MESSAGE_SIZE,
        )
        close_timeout = engine_ws.CLOSE_TIMEOUT_S
        try:
            yield TrioWebsocketConnection(ws)
        except BaseException:
            # As open_websocket: cancelled or failing, send the close frame and go.
            close_timeout = engine_ws.CANCELLED_CLOSE_TIMEOUT_S
            raise
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + close_timeout
                await ws.aclose()
            nursery.cancel_scope.cancel()


def message_queue(
    ws: trio_websocket.WebSocketConnection,
) -> trio.MemoryReceiveChannel[str | bytes] | None:
    """The receive end of trio-websocket's queue of whole messages, which ``get_message`` reads.

    Private in trio-websocket 0.12, which offers no public way to take what is already
    queued; the dependency is pinned below 0.13 and tests/test_trio_websocket_pin.py fails
    if a version moves it. Should it be gone anyway, reading falls back to one message per
    ``get_message`` (slower, never wrong).
    """
    queue = getattr(ws, "_recv_channel", None)
    return queue if isinstance(queue, trio.MemoryReceiveChannel) else None
