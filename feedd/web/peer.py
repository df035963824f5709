"""Cut a client's TCP connection from under the web server.

hypercorn's trio server writes to a socket inside a shielded cancel scope with no deadline,
so a handler whose client stopped reading cannot be cancelled out of that write. Shutting
the socket down makes the write fail, hypercorn sees the connection closed, and the handler
can end.
"""

from __future__ import annotations

import contextlib
import os
import socket

import psutil


def shut_down_peer(server: tuple[str, int], client: tuple[str, int]) -> bool:
    """Shut down our accepted socket from ``client`` on ``server``'s port; False if none."""
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.fd < 0 or not conn.raddr or not conn.laddr:
            continue
        if (conn.raddr.ip, conn.raddr.port) != client or conn.laddr.port != server[1]:
            continue
        # A duplicate descriptor shares the connection: shutting it down ends it for
        # hypercorn's descriptor too, while closing the duplicate leaves that one alone.
        with socket.socket(fileno=os.dup(conn.fd)) as dup, contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)
        return True
    return False
