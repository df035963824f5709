"""The engine's seam to a WebSocket client library: open a connection, take whole messages in
batches, send text. Two implementations: websockets' sans-IO protocol driven by the reading
task itself (connector_websockets.py, the default) and trio-websocket (connector_tws.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import import_module
from importlib.util import find_spec
from typing import Protocol

import trio

from feedd.errors import ConfigError

#: bytes asked of the socket per read: a burst of frames is taken in one go
RECEIVE_SIZE = 65536


class Connection(Protocol):
    """An open client WebSocket. Every failure of the connection, the peer's close included,
    is a TransportError (or trio.BrokenResourceError from the stream underneath)."""

    async def receive_batch(self) -> list[str | bytes]:
        """Wait for a message; return it with every other one already received, in order."""
        ...

    async def send(self, message: str) -> None: ...


class Client(Protocol):
    """What a connector module offers (``feedd.engine.connector_*``)."""

    NAME: str

    def open_connection(self, url: str) -> AbstractAsyncContextManager[Connection]:
        """Connect (TCP, TLS for ``wss``), handshake, and close the socket on the way out."""
        ...

    def wrap_stream(
        self, stream: trio.abc.Stream, host: str, resource: str
    ) -> AbstractAsyncContextManager[Connection]:
        """Handshake over a stream the caller owns (tests use in-memory streams)."""
        ...


Connector = Callable[[str], AbstractAsyncContextManager[Connection]]

#: connector name -> the module implementing it
CLIENTS = {
    "trio-websocket": "feedd.engine.connector_tws",
    "websockets": "feedd.engine.connector_websockets",
}
#: websockets' protocol parsed in the reading task cost a quarter to a third of the CPU per
#: stored row that trio-websocket did in bench_ingest (#17); trio-websocket stays available,
#: and is used where websockets is not installed.
DEFAULT = "websockets" if find_spec("websockets") else "trio-websocket"
#: FEEDD_CONNECTOR picks another for a whole run (the test suite, a benchmark)
_selected = os.environ.get("FEEDD_CONNECTOR") or DEFAULT


def client(name: str | None = None) -> Client:
    """The connector module called ``name`` (default: the one selected with :func:`use`)."""
    name = name or _selected
    if name not in CLIENTS:
        raise ConfigError("connector", f"unknown connector {name!r}; one of {sorted(CLIENTS)}")
    try:
        module: Client = import_module(CLIENTS[name])
    except ImportError as exc:
        raise ConfigError("connector", f"{name} is not installed ({exc.name})") from exc
    return module


def use(name: str) -> None:
    """Select the connector that new sessions open connections with."""
    global _selected
    client(name)  # fails here, not at the first connect, when it cannot be loaded
    _selected = name


def selected() -> str:
    return _selected


@asynccontextmanager
async def open_connection(url: str) -> AsyncIterator[Connection]:
    """Open ``url`` with the selected connector."""
    async with client().open_connection(url) as connection:
        yield connection
