"""Open a client WebSocket whose TCP/TLS stream we own, so it is closed deterministically.

trio-websocket leaves the socket of a peer-closed connection to the garbage collector; owning
the stream and closing it in ``finally`` avoids leaked sockets on long-running services.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from feedd.errors import TransportError, leaves

#: Frames buffered between the socket and our read loop. A deep queue keeps the library
#: answering pings while a burst is parsed (it stops reading when the queue is full).
MESSAGE_QUEUE_SIZE = 256
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 2.0
#: long enough to write a close frame to the socket, not to wait for the answer
CANCELLED_CLOSE_TIMEOUT_S = 0.05
DEFAULT_PORTS = {"ws": 80, "wss": 443}


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    connect_timeout: float = CONNECT_TIMEOUT_S,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Connect (TCP, then TLS for ``wss``) and handshake, each within ``connect_timeout``.

    A failure to open is a TransportError whose ``__cause__`` tells the step: an OSError,
    ``trio.TooSlowError`` or ``trio.BrokenResourceError`` while connecting, or
    ``trio_websocket.ConnectionTimeout`` when the server accepted but never answered the
    handshake, or ``trio_websocket.ConnectionRejected`` (with the HTTP status and body) when
    it refused the handshake.
    """
    parts = urlsplit(url)
    stream = await open_stream(url, connect_timeout)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    opened = False
    try:
        async with unwrapped_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header(url),
                        resource,
                        extra_headers=list(extra_headers),
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=max_message_size,
                        receive_buffer_size=65536,
                    )
            except trio.TooSlowError:
                # Caused by the library's own name for this, so that callers can tell a
                # server that accepted and stayed silent from one that could not be reached.
                raise TransportError(
                    f"no WebSocket handshake from {parts.netloc} within {connect_timeout:g} s"
                ) from trio_websocket.ConnectionTimeout()
            opened = True
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
    except trio_websocket.HandshakeError as exc:
        # An HTTP refusal (a venue's 403/429/5xx on the upgrade) leaves the library's reader
        # task through the nursery; it is a failed connection like any other, to be retried
        # with backoff, not a crash of the exchange.
        if opened:
            raise
        status = getattr(exc, "status_code", None)
        reason = f"HTTP {status}" if status is not None else str(exc) or type(exc).__name__
        raise TransportError(f"WebSocket handshake with {parts.netloc} refused: {reason}") from exc
    finally:
        await trio.aclose_forcefully(stream)


async def open_stream(
    url: str, connect_timeout: float = CONNECT_TIMEOUT_S
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The TCP stream (TLS for ``wss``) a WebSocket on ``url`` runs over; the caller closes it.

    A failure is a TransportError caused by the OSError, ``trio.TooSlowError`` or
    ``trio.BrokenResourceError`` of the step that failed.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise TransportError(f"not a WebSocket URL: {url}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_timeout):
            tcp = await trio.open_tcp_stream(parts.hostname, port)
            stream = tcp
            if parts.scheme == "wss":
                stream = trio.SSLStream(
                    tcp, ssl.create_default_context(), server_hostname=parts.hostname
                )
                try:
                    await stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tcp)
                    raise
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else exc
        raise TransportError(f"cannot connect to {parts.netloc}: {reason}") from exc
    return stream


def host_header(url: str) -> str:
    """The Host of a WebSocket URL: with its port unless that is the scheme's default.

    RFC 7230 (5.4) asks for the port; servers and proxies on other ports route by it.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is None or parts.port == DEFAULT_PORTS.get(parts.scheme):
        return host
    return f"{host}:{parts.port}"


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
        found = list(leaves(group))
        if len(found) == 1:
            # "from None" alone would also erase the cause the leaf was raised with.
            raise found[0] from found[0].__cause__
        raise
