"""The web server's open connections: counted and capped at accept, findable, cut off at will.

One ``Connections`` belongs to one server (``feedd.web.hardening`` registers every connection
hypercorn accepts for it). Caps keep the server inside its share of file descriptors. A client
address at its cap is closed at once, before any parsing. Past the total cap, a newcomer
first costs the oldest *idle* keep-alive connection its place (closing an idle connection
loses nothing a client cannot redo, and keeps one address from locking out the others);
only when none is idle is the newcomer closed. Busy connections (a request or a /ws session
in progress) are never evicted.

Cutting a connection shuts its socket down from under hypercorn: its trio server writes to a
socket inside a shielded cancel scope with no deadline, so a handler whose client stopped
reading could not be cancelled out of that write otherwise. Finding one is a dict look-up
(it used to be a psutil scan of the process's sockets, which stalled ingest under load).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
from collections import Counter
from collections.abc import Callable

import attrs
import trio
from quart import current_app

log = logging.getLogger("feedd.web")

#: connections at once over all clients (before the descriptor limit lowers it)
MAX_CONNECTIONS = 2048
#: descriptors kept out of the connections' reach: exchange sockets, SQLite files, the REST
#: pool, trio's wake-up pipe, psutil's reads of /proc
RESERVED_FDS = 256
#: the smallest caps however low the descriptor limit
MIN_CONNECTIONS = 16
#: an episode of refusals ends once the open connections fall below this share of the cap
_EPISODE_END = 0.9
#: evicted connections still closing may take the open count this far past the cap, no further
_SLACK_SHARE = 16

#: (client host, client port, server port)
_Key = tuple[str, int, int]


def caps_for(fd_limit: int) -> tuple[int, int]:
    """(total, per client address) connection caps for a process allowed ``fd_limit`` files:
    the total leaves ``RESERVED_FDS`` to the rest of feedd, one address gets half of it."""
    total = max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, fd_limit - RESERVED_FDS))
    return total, max(MIN_CONNECTIONS // 2, total // 2)


def fd_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS + RESERVED_FDS if soft == resource.RLIM_INFINITY else soft


def _key(server: tuple[str, int], client: tuple[str, int]) -> _Key:
    return str(client[0]), int(client[1]), int(server[1])


@attrs.define(eq=False)
class Connection:
    """One accepted socket; ``idle`` between requests (and before the first)."""

    sock: trio.socket.SocketType
    address: str
    key: _Key | None
    idle: bool = True
    #: shut down by us; it only waits for hypercorn to let go
    cut_off: bool = False

    def cut(self) -> None:
        """Shut the socket down: a non-blocking system call, safe from the event loop."""
        self.cut_off = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Connections:
    """The open connections of one server, with its caps and what they cost clients."""

    def __init__(self, total: int | None = None, per_client: int | None = None) -> None:
        default_total, default_per_client = caps_for(fd_limit())
        self.total = total or default_total
        self.per_client = per_client or min(default_per_client, self.total)
        self._by_key: dict[_Key, Connection] = {}
        self._per_address: Counter[str] = Counter()
        #: idle connections, oldest idle first, overall and per address
        self._idle: dict[Connection, None] = {}
        self.open = 0
        #: connections closed at accept because no idle one could make room
        self.refused = 0
        #: idle connections closed to make room for a new one
        self.evicted = 0
        #: accept() failures for lack of descriptors or memory (EMFILE, ENFILE, ...)
        self.accept_errors = 0
        #: connections closed because the client stopped reading what was written to it
        self.stalled = 0
        self._crowded = False
        self._starved = False
        self._changed = trio.Event()

    @property
    def busy(self) -> int:
        """Connections serving a request or a /ws session."""
        return self.open - len(self._idle)

    async def wait_until(self, condition: Callable[[Connections], bool]) -> None:
        """Wait until ``condition(self)`` holds, checked after every change."""
        while not condition(self):
            await self._changed.wait()

    def admit(self, sock: trio.socket.SocketType) -> Connection | None:
        """Register a newly accepted socket, making room if needed; None: refused, close it."""
        self._end_starvation()
        try:
            peer = sock.getpeername()
            key: _Key | None = _key(sock.getsockname(), peer)
            address = str(peer[0])
        except OSError:  # gone already (or not an IP socket): count it, nothing to find
            key, address = None, ""
        if self.open >= self.total + max(4, self.total // _SLACK_SHARE):
            self._refuse(f"{self.open} connections open, some still closing")
            return None
        # An address at its cap is refused outright: evicting its own idle connections would
        # only help it churn (an attacker's refused connections come straight back).
        if self._per_address[address] >= self.per_client:
            self._refuse(f"address {address} has {self.per_client} connections open")
            return None
        if self.open >= self.total and not self._evict(self._idle):
            self._refuse(f"{self.total} connections open")
            return None
        connection = Connection(sock, address, key)
        self.open += 1
        self._per_address[address] += 1
        if key is not None:
            self._by_key[key] = connection
        self._set_idle(connection, True)
        return connection

    def release(self, connection: Connection) -> None:
        self._set_idle(connection, False)
        if connection.key is not None and self._by_key.get(connection.key) is connection:
            del self._by_key[connection.key]
        self.open -= 1
        self._per_address[connection.address] -= 1
        if not self._per_address[connection.address]:
            del self._per_address[connection.address]
        if self._crowded and self.open < self.total * _EPISODE_END:
            self._crowded = False
            log.warning(
                "connections back under the cap (%d open of %d); so far %d refused, %d evicted",
                self.open,
                self.total,
                self.refused,
                self.evicted,
            )

    def set_idle(self, connection: Connection, idle: bool) -> None:
        """hypercorn says the connection waits for a request (True) or serves one (False)."""
        self._set_idle(connection, idle and not connection.cut_off)

    def shut_down(self, server: tuple[str, int], client: tuple[str, int]) -> bool:
        """Cut our accepted socket from ``client`` on ``server``'s port; False if none."""
        connection = self._by_key.get(_key(server, client))
        if connection is None:
            return False
        connection.cut()
        return True

    def accept_failed(self, errno_name: str) -> None:
        """accept() failed for lack of resources: the server retries; say so once."""
        self.accept_errors += 1
        self._changed.set()
        self._changed = trio.Event()
        if not self._starved:
            self._starved = True
            log.error(
                "cannot accept connections: %s (out of file descriptors?); new clients wait "
                "until some close. %d connections open",
                errno_name,
                self.open,
            )

    def _end_starvation(self) -> None:
        if self._starved:
            self._starved = False
            log.warning("accepting connections again (%d open)", self.open)

    def _set_idle(self, connection: Connection, idle: bool) -> None:
        self._changed.set()
        self._changed = trio.Event()
        connection.idle = idle
        self._idle.pop(connection, None)  # re-inserted last: the dict keeps idle-since order
        if idle:
            self._idle[connection] = None

    def _evict(self, idle: dict[Connection, None]) -> bool:
        if not idle:
            return False
        oldest = next(iter(idle))
        self._set_idle(oldest, False)  # once: its release comes when hypercorn lets go
        oldest.cut()
        self.evicted += 1
        return True

    def _refuse(self, why: str) -> None:
        self.refused += 1
        if not self._crowded:
            self._crowded = True
            log.warning("refusing new connections: %s and none idle", why)


def shut_down_peer(server: tuple[str, int], client: tuple[str, int]) -> bool:
    """Cut the connection from ``client`` on ``server``'s port, of the app serving this request
    or WebSocket; False if none."""
    connections: Connections = current_app.config["FEEDD_STATE"].connections
    return connections.shut_down(server, client)
