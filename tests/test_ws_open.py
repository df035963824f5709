"""``open_websocket`` over loopback sockets: what its handshake sends, how long opening may
take, and how promptly a cancelled connection says goodbye."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress

import attrs
import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request

from feedd.engine.ws import host_header, open_websocket
from feedd.errors import TransportError


@attrs.define(eq=False)
class Server:
    """Accepts every handshake, recording its request, and answers close frames."""

    port: int = 0
    requests: list[Request] = attrs.field(factory=list)
    close_codes: list[int] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        # A client that is cancelled does not wait for our close reply.
        with suppress(trio.BrokenResourceError):
            while data := await stream.receive_some():
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        self.requests.append(event)
                        await stream.send_all(ws.send(AcceptConnection()))
                    elif isinstance(event, CloseConnection):
                        self.close_codes.append(event.code)
                        self.closed.set()
                        await stream.send_all(ws.send(event.response()))


async def serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handler, listeners)
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    accepting = Server()
    accepting.port = await serve(nursery, accepting.handle)
    return accepting


async def test_host_carries_a_non_default_port(server: Server) -> None:
    async with open_websocket(f"ws://127.0.0.1:{server.port}/ws?x=1"):
        pass
    [request] = server.requests
    assert (request.host, request.target) == (f"127.0.0.1:{server.port}", "/ws?x=1")


@pytest.mark.parametrize(
    ("url", "dialled", "host"),
    [
        ("ws://feedd.test/ws", ("feedd.test", 80), "feedd.test"),
        ("ws://feedd.test:80/ws", ("feedd.test", 80), "feedd.test"),
        ("ws://user@FEEDD.test:8080/ws", ("feedd.test", 8080), "feedd.test:8080"),
        ("ws://[::1]:8080/ws", ("::1", 8080), "[::1]:8080"),
    ],
)
async def test_host_leaves_out_only_the_default_port(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    dialled: tuple[str, int],
    host: str,
) -> None:
    # Port 80 cannot be bound here: dial our server whatever the URL names.
    dials: list[tuple[str, int]] = []
    real_open = trio.open_tcp_stream

    async def dial(hostname: str, port: int) -> trio.SocketStream:
        dials.append((hostname, port))
        return await real_open("127.0.0.1", server.port)

    monkeypatch.setattr(trio, "open_tcp_stream", dial)
    async with open_websocket(url):
        pass
    assert dials == [dialled]
    assert [r.host for r in server.requests] == [host]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("wss://stream.example.com/ws", "stream.example.com"),
        ("wss://stream.example.com:443/ws", "stream.example.com"),
        ("wss://stream.example.com:9443/ws", "stream.example.com:9443"),
        ("wss://stream.example.com:80/ws", "stream.example.com:80"),
    ],
)
def test_host_header_for_wss(url: str, host: str) -> None:
    assert host_header(url) == host


async def test_extra_headers_reach_the_server(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with open_websocket(url, extra_headers=[(b"Authorization", b"Bearer s3cret")]):
        pass
    [request] = server.requests
    assert (b"authorization", b"Bearer s3cret") in request.extra_headers


async def test_connect_timeout_bounds_a_silent_handshake(nursery: trio.Nursery) -> None:
    async def never_answer(stream: trio.SocketStream) -> None:
        with suppress(trio.BrokenResourceError):
            while await stream.receive_some():
                pass

    port = await serve(nursery, never_answer)
    timeout = 0.3
    start = trio.current_time()
    with pytest.raises(TransportError) as raised:
        async with open_websocket(f"ws://127.0.0.1:{port}/ws", connect_timeout=timeout):
            pytest.fail("the handshake was never answered")
    elapsed = trio.current_time() - start
    assert timeout <= elapsed < timeout + 0.5
    # feedctl tells a silent server from an unreachable one by this cause.
    assert isinstance(raised.value.__cause__, trio_websocket.ConnectionTimeout)


async def test_a_closed_port_is_a_transport_error_caused_by_the_os_error() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError) as raised:
        async with open_websocket(f"ws://127.0.0.1:{port}/ws", connect_timeout=5):
            pytest.fail("nothing listens there")
    assert isinstance(raised.value.__cause__, OSError)


async def test_cancelled_connection_closes_promptly_with_a_close_frame(server: Server) -> None:
    with trio.CancelScope() as scope:
        async with open_websocket(f"ws://127.0.0.1:{server.port}/ws") as ws:
            cancelled_at = trio.current_time()
            scope.cancel()
            await ws.get_message()
    # The reader task is cancelled too, so the server's reply is never read: a close that
    # waited for it would take the whole CLOSE_TIMEOUT_S (2 s).
    assert trio.current_time() - cancelled_at < 0.5
    with trio.fail_after(5):
        await server.closed.wait()
    assert server.close_codes == [1000]


async def test_a_refused_handshake_is_a_transport_error(nursery: trio.Nursery) -> None:
    """A venue answering the upgrade with 429 is a failed connection to retry with backoff
    (TransportError, the rejection as its cause), not an error that crashes the exchange."""

    async def refuse(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    await stream.send_all(ws.send(RejectConnection(status_code=429)))
                    await stream.aclose()
                    return

    port = await serve(nursery, refuse)
    with trio.fail_after(5), pytest.raises(TransportError, match="refused: HTTP 429") as caught:
        async with open_websocket(f"ws://127.0.0.1:{port}/ws"):
            raise AssertionError("opened")
    rejected = caught.value.__cause__
    assert isinstance(rejected, trio_websocket.ConnectionRejected)
    assert rejected.status_code == 429
