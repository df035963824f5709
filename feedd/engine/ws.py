"""Open a client WebSocket whose TCP/TLS stream we own, so it is closed deterministically.

trio-websocket leaves the socket of a peer-closed connection to the garbage collector; owning
the stream and closing it in ``finally`` avoids leaked sockets on long-running services.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from feedd.errors import TransportError

#: Frames buffered between the socket and our read loop. A deep queue keeps the library
#: answering pings while a burst is parsed (it stops reading when the queue is full).
MESSAGE_QUEUE_SIZE = 256
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 2.0
#: long enough to write a close frame to the socket, not to wait for the answer
CANCELLED_CLOSE_TIMEOUT_S = 0.05


@asynccontextmanager
async def open_websocket(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TransportError(f"not a WebSocket URL: {url}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            tcp = await trio.open_tcp_stream(parts.hostname, port)
            stream = tcp
            if secure:
                stream = trio.SSLStream(
                    tcp, ssl.create_default_context(), server_hostname=parts.hostname
                )
                await stream.do_handshake()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise TransportError(f"cannot connect to {parts.netloc}: {exc}") from None
    try:
        async with unwrapped_nursery() as nursery:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        parts.hostname,
                        resource,
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=MAX_MESSAGE_SIZE,
                        receive_buffer_size=65536,
                    )
            except (trio_websocket.HandshakeError, trio.TooSlowError, OSError) as exc:
                raise TransportError(
                    f"WebSocket handshake with {parts.netloc} failed: {exc}"
                ) from None
            close_timeout = CLOSE_TIMEOUT_S
            try:
                yield ws
            except BaseException:
                # Cancelled (an exchange restart) or failing: the library's reader task is
                # being cancelled with us, so the peer's close reply would never be read.
                # Send our close frame and go, instead of waiting out the whole timeout.
                close_timeout = CANCELLED_CLOSE_TIMEOUT_S
                raise
            finally:
                # Shielded so that a cancelled shard still says goodbye with a close frame
                # instead of leaving the server a 1006 abnormal closure.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + close_timeout
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def unwrapped_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that re-raises a lone error as itself rather than inside an ExceptionGroup.

    The body of ``open_websocket`` runs inside the nursery that hosts the library's reader
    task; callers should see their own exception, not a group around it.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
