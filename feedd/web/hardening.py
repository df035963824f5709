"""Guards around hypercorn 0.18's trio connection task, for the servers feedd starts.

hypercorn offers no hook per connection, so ``install`` wraps ``TCPServer.run`` on the class:
a server started with a ``ServerConfig`` gets the guards, set on each of its connections
(``protocol_send`` and ``_read_data``, which hypercorn looks up on the instance); any other
server runs as hypercorn wrote it. Each guard exists because nothing public does its job:

- Caps (``feedd.web.peer``): every accepted socket is admitted or closed before hypercorn
  parses a byte of it, and registered so a handler can cut it off.
- Closing: hypercorn closes a connection after ``Connection: close``, and arms the keep-alive
  timer after a response, from inside the app's task, which quart-trio cancels as soon as
  the response is out; both steps died of that cancellation, leaving every connection open
  for ever (1,100 idle ones exhausted the descriptors and killed feedd). They run shielded
  here, under a deadline. And once the client has closed, the keep-alive timer is stopped:
  hypercorn let the connection's task (and its socket) wait for it to expire.
- Containment: an exception raised while serving one connection escapes ``TCPServer.run``
  into the server's nursery and takes the server (and feedd) down. A client can trigger that
  at will: a WebSocket frame sent before the handshake's 101 makes hypercorn answer 400
  twice, and h11 raises LocalProtocolError on the second. It is logged, the connection dropped.
- Stalled writes: hypercorn writes every byte under a cancel shield with no deadline, so a
  client that stops reading a large response (an export) held its connection slot for ever
  and hung feedd's shutdown on that write. Each write here has its own deadline
  (``WRITE_STALL_S``); past it the connection is closed and counted (``stalled``).
- A client that vanishes while a response or a /ws message is being written makes hypercorn
  close the stream (``send_eof`` holds trio's send guard across a checkpoint) while a
  handler's write is on its way: the write fails with BusyResourceError, which hypercorn does
  not expect. It means what BrokenResourceError means, the client is gone.

trio's accept loop logs every failed accept() (EMFILE: no descriptor left) with a traceback
ten times a second; ``AcceptErrors`` turns that into one line per episode and a counter.

Written against hypercorn 0.18 (pinned ``<0.19``); tests/test_hardening.py fails loudly when
a new version moves what this relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated
from hypercorn.trio.tcp_server import TCPServer

from feedd.web.peer import Connection, Connections

log = logging.getLogger("feedd.web")

#: closing a connection or (re)arming its keep-alive timer takes no network wait; bounded anyway
LIFECYCLE_TIMEOUT_S = 5.0
#: a write to a client that has not read anything for this long gives up and closes: a
#: reading client drains a socket buffer in milliseconds, even over a slow link
WRITE_STALL_S = 60.0
#: the logger trio's ``serve_listeners`` reports failed accept() calls on
ACCEPT_LOGGER = "trio.serve_listeners"


class ServerConfig(HypercornConfig):
    """hypercorn's configuration plus the server's connection registry: the guards apply."""

    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self.connections = connections


class AcceptErrors(logging.Filter):
    """Counts trio's failed accept() records into ``connections`` instead of logging each."""

    def __init__(self, connections: Connections) -> None:
        super().__init__()
        self.connections = connections

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("accept returned"):
            args = record.args if isinstance(record.args, tuple) else ()
            self.connections.accept_failed(str(args[0]) if args else "?")
            return False
        return True


def install() -> None:
    """Wrap hypercorn's ``TCPServer.run`` once per process (idempotent). Only the entry point
    is replaced on the class; the guards are set on each connection of a guarded server."""
    original_run: Callable[[Any], Awaitable[None]] = TCPServer.run
    if getattr(original_run, "_feedd_guarded", False):
        return

    async def run(self: Any) -> None:
        if not isinstance(self.config, ServerConfig):
            await original_run(self)
            return
        connections: Connections = self.config.connections
        sock = getattr(self.stream, "socket", None)  # None: TLS, which feedd does not serve
        connection = None if sock is None else connections.admit(sock)
        if connection is None and sock is not None:
            return  # refused: serve_listeners closes the stream
        _guard(self, connections, connection)
        try:
            await original_run(self)
        except Exception as exc:  # trio.Cancelled is a BaseException and passes
            log.warning("dropped a client connection after a server error: %r", exc)
        finally:
            if connection is not None:
                connections.release(connection)

    run._feedd_guarded = True  # type: ignore[attr-defined]
    run._feedd_original = original_run  # type: ignore[attr-defined]
    TCPServer.run = run  # type: ignore[method-assign]


def _guard(server: Any, connections: Connections, connection: Connection | None) -> None:
    """Replace two methods of one TCPServer instance (hypercorn looks them up on ``self``)."""
    original_send: Callable[[Any], Awaitable[None]] = server.protocol_send
    original_read: Callable[[], Awaitable[None]] = server._read_data

    async def protocol_send(event: Any) -> None:
        if isinstance(event, RawData):
            await send_data(event.data)
            return
        if isinstance(event, Updated) and connection is not None:
            connections.set_idle(connection, event.idle)
        with trio.move_on_after(LIFECYCLE_TIMEOUT_S, shield=True):
            await original_send(event)

    async def read_data() -> None:
        await original_read()
        # The client closed (or the read failed): nothing will arrive to wait for. hypercorn
        # leaves the keep-alive timer running, and the connection's task (and socket) waits
        # for it before closing: a client closing at once still held a descriptor for the
        # whole timeout.
        with trio.move_on_after(LIFECYCLE_TIMEOUT_S, shield=True):
            await server.idle_task.stop()

    async def send_data(data: bytes) -> None:
        if not data:
            # h11 ends a response with a Content-Length with no bytes: hypercorn still took
            # the lock, a shield and a scheduler round trip on every request to write them.
            return
        # hypercorn's own RawData branch, with a deadline on its shield (see the docstring).
        async with server.send_lock:
            try:
                deadline = trio.current_time() + WRITE_STALL_S
                with trio.CancelScope(shield=True, deadline=deadline) as scope:
                    await server.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                await server.protocol.handle(Closed())
                return
        if scope.cancelled_caught:
            connections.stalled += 1
            log.info("closed a connection whose client read nothing for %g s", WRITE_STALL_S)
            with trio.CancelScope(shield=True):
                await server.stream.aclose()  # the read loop and the handler end on it
                await server.protocol.handle(Closed())

    server.protocol_send = protocol_send
    server._read_data = read_data
