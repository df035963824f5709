"""Contain hypercorn's per-connection failures to their connection.

hypercorn 0.18 (trio worker) lets an exception raised while serving one connection escape
``TCPServer.run`` into the server's nursery, which takes the whole server (and feedd)
down. A client can trigger that at will: sending a WebSocket frame before the handshake's
101 makes hypercorn answer 400 twice, and h11 raises LocalProtocolError on the second.
One client's broken connection must not end everyone's, so the failure is logged and that
connection dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("feedd.web")


def contain_connection_errors() -> None:
    original: Callable[[Any], Awaitable[None]] = TCPServer.run
    if getattr(original, "_feedd_contained", False):
        return

    async def run(self: Any) -> None:
        try:
            await original(self)
        except Exception as exc:  # trio.Cancelled is a BaseException and passes
            log.warning("dropped a client connection after a server error: %r", exc)

    run._feedd_contained = True  # type: ignore[attr-defined]
    TCPServer.run = run  # type: ignore[method-assign]
