"""Each connector over loopback sockets: whole messages in batches, a burst in one wake-up,
pings answered, the peer's close and a refused handshake as TransportErrors, a prompt close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress

import pytest
import trio
import trio.lowlevel
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from feedd.engine import connector
from feedd.engine.connector import Client
from feedd.errors import TransportError

Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """The server's end of one accepted connection, driven by a test's script."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.received: list[str] = []
        self.pongs: list[bytes] = []
        self.close_codes: list[int] = []

    async def send(self, *events: Message | Ping | CloseConnection) -> None:
        """Every event in one write: the client reads them all at once."""
        await self.stream.send_all(b"".join(self.ws.send(e) for e in events))

    async def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            data = await self.stream.receive_some()
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self.received.append(event.data)
                elif isinstance(event, Pong):
                    self.pongs.append(bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    self.close_codes.append(event.code)
                    with suppress(Exception):
                        await self.stream.send_all(self.ws.send(event.response()))


async def serve(nursery: trio.Nursery, script: Script, *, status: int = 101) -> str:
    """A server on port 0 that accepts (or refuses with ``status``) and runs ``script``."""

    async def handle(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await stream.receive_some():
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        if status != 101:
                            await stream.send_all(ws.send(RejectConnection(status_code=status)))
                            await stream.aclose()
                            return
                        await stream.send_all(ws.send(AcceptConnection()))
                        await script(Peer(stream, ws))
                        return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/stream"


@pytest.fixture(params=sorted(connector.CLIENTS))
def client(request: pytest.FixtureRequest) -> Client:
    return connector.client(request.param)


def frame_text(i: int) -> str:
    return f'{{"n":{i},"pad":"{"x" * 300}"}}'


async def test_a_burst_is_parsed_in_one_wake_up(nursery: trio.Nursery) -> None:
    """The websockets connector parses every frame of a socket read in the reading task.
    (trio-websocket's reader task hands a waiting consumer one or two messages per wake-up:
    105 batches for these 150 frames; tests/test_trio_websocket_pin.py covers its queue.)"""
    client = connector.client("websockets")
    sent = [frame_text(i) for i in range(150)]
    release = trio.Event()

    async def burst(peer: Peer) -> None:
        await peer.send(*(TextMessage(t) for t in sent))
        await release.wait()

    url = await serve(nursery, burst)
    async with client.open_connection(url) as conn:
        batches: list[list[str | bytes]] = []
        while sum(map(len, batches)) < len(sent):
            batches.append(await conn.receive_batch())
        release.set()
    assert [m for batch in batches for m in batch] == sent
    # 150 frames of 310 bytes: one or two socket reads, not a wake-up per frame
    assert len(batches) <= 2, [len(b) for b in batches]


async def test_fragments_make_one_message(nursery: trio.Nursery, client: Client) -> None:
    async def fragmented(peer: Peer) -> None:
        await peer.send(
            TextMessage("ab", message_finished=False),
            TextMessage("cd", message_finished=False),
            TextMessage("ef"),
            TextMessage("next"),
        )
        await trio.sleep_forever()

    url = await serve(nursery, fragmented)
    async with client.open_connection(url) as conn:
        got: list[str | bytes] = []
        while len(got) < 2:
            got += await conn.receive_batch()
    assert got == ["abcdef", "next"]


async def test_pings_are_answered_and_sends_arrive(nursery: trio.Nursery, client: Client) -> None:
    peers: list[Peer] = []
    answered = trio.Event()

    async def pinging(peer: Peer) -> None:
        peers.append(peer)
        await peer.send(Ping(b"still there?"), TextMessage("hello"))
        await peer.read_until(lambda: bool(peer.pongs) and bool(peer.received))
        answered.set()
        await trio.sleep_forever()

    url = await serve(nursery, pinging)
    with trio.fail_after(10):
        async with client.open_connection(url) as conn:
            assert await conn.receive_batch() == ["hello"]
            await conn.send('{"op":"subscribe"}')
            await answered.wait()
    assert peers[0].pongs == [b"still there?"]
    assert peers[0].received == ['{"op":"subscribe"}']


async def test_the_peers_close_ends_the_connection_after_its_messages(
    nursery: trio.Nursery, client: Client
) -> None:
    async def closing(peer: Peer) -> None:
        await peer.send(TextMessage("last"), CloseConnection(code=4000, reason="going away"))
        await peer.read_until(lambda: bool(peer.close_codes))

    url = await serve(nursery, closing)
    got: list[str | bytes] = []
    with trio.fail_after(10), pytest.raises(TransportError, match="closed by the exchange"):
        async with client.open_connection(url) as conn:
            while True:
                got += await conn.receive_batch()
    assert got == ["last"]


async def test_a_refused_handshake_is_a_transport_error(
    nursery: trio.Nursery, client: Client
) -> None:
    async def never(peer: Peer) -> None:
        raise AssertionError("accepted")

    url = await serve(nursery, never, status=429)
    with trio.fail_after(10), pytest.raises(TransportError, match="refused: HTTP 429"):
        async with client.open_connection(url):
            raise AssertionError("opened")


async def test_a_closed_port_is_a_transport_error(client: Client) -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError) as raised:
        async with client.open_connection(f"ws://127.0.0.1:{port}/ws"):
            raise AssertionError("nothing listens there")
    assert isinstance(raised.value.__cause__, OSError)


async def test_a_cancelled_connection_says_goodbye_promptly(
    nursery: trio.Nursery, client: Client
) -> None:
    peers: list[Peer] = []
    closed = trio.Event()

    async def waiting(peer: Peer) -> None:
        peers.append(peer)
        # Reads the close frame but never answers it: a client waiting for the answer
        # would take the whole close timeout.
        while data := await peer.stream.receive_some():
            peer.ws.receive_data(data)
            for event in peer.ws.events():
                if isinstance(event, CloseConnection):
                    peer.close_codes.append(event.code)
                    closed.set()
        await trio.sleep_forever()

    url = await serve(nursery, waiting)
    with trio.CancelScope() as scope:
        async with client.open_connection(url) as conn:
            cancelled_at = trio.current_time()
            scope.cancel()
            await conn.receive_batch()
    assert trio.current_time() - cancelled_at < 0.5
    with trio.fail_after(5):
        await closed.wait()
    assert peers[0].close_codes == [1000]


async def test_an_oversized_message_ends_the_connection(
    nursery: trio.Nursery, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedd.engine import ws as engine_ws

    monkeypatch.setattr(engine_ws, "MAX_MESSAGE_SIZE", 1000)

    async def oversized(peer: Peer) -> None:
        await peer.send(TextMessage("small"), TextMessage("x" * 5000))
        await peer.read_until(lambda: bool(peer.close_codes))

    url = await serve(nursery, oversized)
    got: list[str | bytes] = []
    with trio.fail_after(10), pytest.raises(TransportError):
        async with client.open_connection(url) as conn:
            while True:
                got += await conn.receive_batch()
    assert got == ["small"]


def test_an_unknown_connector_is_a_config_error() -> None:
    from feedd.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown connector 'nope'"):
        connector.use("nope")
    assert connector.selected() in connector.CLIENTS
