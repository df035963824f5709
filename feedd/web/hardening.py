"""Contain hypercorn's per-connection failures to their connection.

hypercorn 0.18 (trio worker) lets an exception raised while serving one connection escape
``TCPServer.run`` into the server's nursery, which takes the whole server (and feedd)
down. A client can trigger that at will: sending a WebSocket frame before the handshake's
101 makes hypercorn answer 400 twice, and h11 raises LocalProtocolError on the second.
One client's broken connection must not end everyone's, so the failure is logged and that
connection dropped.

A client that vanishes while a response or a /ws message is being written makes hypercorn
close the stream (``send_eof``, which holds trio's send guard across a checkpoint) while a
handler's write is on its way: that write fails with BusyResourceError, which hypercorn does
not expect and the handler reported with a traceback. It means what BrokenResourceError
means, the client is gone, and is handled the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.events import Closed
from hypercorn.trio.tcp_server import TCPServer

from feedd.web.peer import registered

log = logging.getLogger("feedd.web")


def contain_connection_errors() -> None:
    original: Callable[[Any], Awaitable[None]] = TCPServer.run
    if getattr(original, "_feedd_contained", False):
        return
    original_send: Callable[[Any, Any], Awaitable[None]] = TCPServer.protocol_send

    async def run(self: Any) -> None:
        sock = getattr(self.stream, "socket", None)  # None: TLS, which feedd does not serve
        try:
            if sock is None:
                await original(self)
            else:
                with registered(sock):
                    await original(self)
        except Exception as exc:  # trio.Cancelled is a BaseException and passes
            log.warning("dropped a client connection after a server error: %r", exc)

    async def protocol_send(self: Any, event: Any) -> None:
        try:
            await original_send(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    run._feedd_contained = True  # type: ignore[attr-defined]
    TCPServer.run = run  # type: ignore[method-assign]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
