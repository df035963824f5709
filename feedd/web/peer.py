"""Cut a client's TCP connection from under the web server.

hypercorn's trio server writes to a socket inside a shielded cancel scope with no deadline,
so a handler whose client stopped reading cannot be cancelled out of that write. Shutting
the socket down makes the write fail, hypercorn sees the connection closed, and the handler
can end.

The server's connections are registered here while they are served (``feedd.web.hardening``
wraps hypercorn's connection task), so finding one is a dict look-up. It used to be a scan of
the process's sockets with psutil: hundreds of slow clients cut off at once each paid a read
of ``/proc`` for every descriptor, holding the GIL long enough to stall ingest.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import trio

#: (client host, client port, server port) -> the accepted socket
_Key = tuple[str, int, int]
_live: dict[_Key, trio.socket.SocketType] = {}


def _key(server: tuple[str, int], client: tuple[str, int]) -> _Key:
    return str(client[0]), int(client[1]), int(server[1])


@contextlib.contextmanager
def registered(sock: trio.socket.SocketType) -> Iterator[None]:
    """Make ``sock`` findable by ``shut_down_peer`` while the block runs."""
    try:
        key = _key(sock.getsockname(), sock.getpeername())
    except OSError:  # the client is gone already: nothing to cut
        yield
        return
    _live[key] = sock
    try:
        yield
    finally:
        if _live.get(key) is sock:
            del _live[key]


def shut_down_peer(server: tuple[str, int], client: tuple[str, int]) -> bool:
    """Shut down our accepted socket from ``client`` on ``server``'s port; False if none.

    A non-blocking system call: safe to make from the event loop."""
    sock = _live.get(_key(server, client))
    if sock is None:
        return False
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    return True
