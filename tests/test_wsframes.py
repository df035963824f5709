"""The websockets connector's own frame splitting (feedd/engine/wsframes.py) against websockets'
protocol alone: any stream a server may send, in any chunking, gives the same messages, the same
answers (pongs, the close) and the same end as when websockets parses every frame."""

from __future__ import annotations

import itertools
import random
from contextlib import suppress

import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from feedd.engine import connector_websockets
from feedd.engine.connector_websockets import WebsocketsConnection, _ended
from feedd.engine.wsframes import frame_bounds
from feedd.errors import TransportError

MAX_SIZE = 70_000


def opened(max_size: int = MAX_SIZE) -> tuple[ClientProtocol, ServerProtocol]:
    """A client and a server protocol past the handshake."""
    client = ClientProtocol(parse_uri("ws://venue.test/ws"), max_size=max_size)
    server = ServerProtocol(max_size=None)
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    assert client.state is State.OPEN
    return client, server


def connection(
    client: ClientProtocol, *, split: bool, max_size: int = MAX_SIZE
) -> WebsocketsConnection:
    conn = WebsocketsConnection(trio.testing.MemorySendStream(), client, max_size)
    conn._bypass = not split  # every byte through websockets: the connector as it was
    return conn


def header(first: int, length: int, *, masked: bool = False) -> bytes:
    mask = 0x80 if masked else 0
    if length < 126:
        head = bytes([first, mask | length])
    elif length < 65536:
        head = bytes([first, mask | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, mask | 127]) + length.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"")


def payload(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 5, 125, 126, 300, 65535, 65536, 66000])
    return bytes(rng.randrange(32, 127) for _ in range(min(size, 400))) * (size // 400 + 1)


def stream(rng: random.Random) -> bytes:
    """Frames a server might send: whole messages, fragments with pings between them, pongs,
    and sometimes an end: a close, or a frame websockets must refuse."""
    server = opened()[1]
    out = []
    for _ in range(rng.randrange(1, 30)):
        kind = rng.random()
        if kind < 0.5:
            server.send_text(payload(rng)[:MAX_SIZE])
        elif kind < 0.6:
            server.send_binary(payload(rng)[:MAX_SIZE])
        elif kind < 0.7:
            server.send_ping(payload(rng)[:125])
        elif kind < 0.72:
            server.send_pong(b"pong")
        elif kind < 0.75:
            server.send_text(b"\xff\xfe not UTF-8")  # handed on as bytes: the session says so
        elif kind < 0.85:
            parts = rng.randrange(2, 5)
            server.send_text(b"a" * rng.randrange(0, 200), fin=False)
            for i in range(parts - 1):
                if rng.random() < 0.5:
                    server.send_ping(b"mid")
                server.send_continuation(b"b" * rng.randrange(0, 200), fin=i == parts - 2)
        else:
            out.append(b"".join(server.data_to_send()))
            out.append(b"".join(bytes(frame) for frame in [rng.choice(BAD_ENDS)(rng)]))
            return b"".join(out)
        out.append(b"".join(server.data_to_send()))
    if rng.random() < 0.3:
        server.send_close(1000, "bye")
        out.append(b"".join(server.data_to_send()))
    return b"".join(out)


BAD_ENDS = [
    lambda rng: header(0x81, 3, masked=True) + b"abc",  # a masked server frame
    lambda rng: header(0xC1, 3) + b"abc",  # RSV1 without an extension
    lambda rng: header(0x83, 3) + b"abc",  # a reserved opcode
    lambda rng: header(0x81, MAX_SIZE + 1) + b"x" * rng.choice([0, 10, MAX_SIZE + 1]),
    lambda rng: header(0x89, 126) + b"p" * 126,  # a control frame over 125 bytes
    lambda rng: header(0x80, 2) + b"cc",  # a continuation of nothing
    lambda rng: header(0x01, 2) + b"ab" + header(0x81, 2) + b"cd",  # a message inside another
    lambda rng: (
        header(0x88, 2) + (1000).to_bytes(2, "big") + header(0x81, 2) + b"ab"
    ),  # after close
    lambda rng: header(0x81, 4) + b"ab",  # cut off by the end of the stream
]


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 40))))
    if rng.random() < 0.2:
        cuts = sorted(set(cuts) | set(range(1, min(len(data), 40))))  # byte by byte at first
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def answers(client: ClientProtocol, server: ServerProtocol) -> list[tuple[Opcode, bytes]]:
    server.receive_data(b"".join(client.data_to_send()))
    return [(f.opcode, bytes(f.data)) for f in server.events_received() if isinstance(f, Frame)]


def run(
    data: list[bytes], *, split: bool, max_size: int = MAX_SIZE
) -> tuple[list[str | bytes], list[object], str]:
    client, server = opened(max_size)
    conn = connection(client, split=split, max_size=max_size)
    for chunk in data:
        conn._take(chunk)
    conn._take_eof()
    return conn._messages, list(answers(client, server)), str(_ended(client))


@pytest.mark.parametrize("seed", range(300))
def test_split_frames_match_websockets(seed: int) -> None:
    rng = random.Random(seed)
    data = chunks(stream(rng), rng)
    assert run(data, split=True) == run(data, split=False)


@pytest.mark.parametrize("size", [100, 999, 1000, 1001, 5000])
def test_a_message_over_a_small_max_size_ends_it_as_websockets_does(size: int) -> None:
    """Under 64 KiB the frames the connector takes inline have a 7- or 16-bit length: a
    max_size below that must still refuse the longer ones, as websockets does."""
    server = opened()[1]
    server.send_text(b"a" * 50)
    server.send_text(b"b" * size)
    server.send_text(b"c" * 50)
    data = [b"".join(server.data_to_send())]
    split = run(data, split=True, max_size=1000)
    assert split == run(data, split=False, max_size=1000)
    assert split[0] == (["a" * 50, "b" * size, "c" * 50] if size <= 1000 else ["a" * 50])


def test_most_frames_never_reach_the_protocol() -> None:
    """The point of it: whole messages are taken without websockets' parser."""
    client, server = opened()
    for i in range(50):
        server.send_text(f'{{"n":{i}}}'.encode())
    server.send_ping(b"hi")
    server.send_text(b"after")
    conn = connection(client, split=True)
    fed: list[int] = []
    receive = client.receive_data
    client.receive_data = lambda data: (fed.append(len(data)), receive(data))[1]  # type: ignore[method-assign]
    conn._take(b"".join(server.data_to_send()))
    assert conn._messages == [f'{{"n":{i}}}' for i in range(50)] + ["after"]
    assert fed == [4]  # the ping alone
    assert answers(client, server) == [(Opcode.PONG, b"hi")]


def test_frame_bounds_of_each_length_form() -> None:
    assert frame_bounds(header(0x81, 5) + b"hello", 0) == (2, 7)
    assert frame_bounds(header(0x81, 300), 0) == (4, 304)
    assert frame_bounds(header(0x81, 70_000), 0) == (10, 70_010)
    assert frame_bounds(header(0x81, 5, masked=True), 0) == (6, 11)
    assert frame_bounds(header(0x81, 300)[:3], 0) is None  # the length is not all in
    assert frame_bounds(b"\x81", 0) is None


async def answer_the_close(stream: trio.SocketStream, server: ServerProtocol) -> None:
    """Reply to the client's close and hang up, as websockets' server asks."""
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await stream.receive_some():
            server.receive_data(data)
            for chunk in server.data_to_send():
                if not chunk:
                    await stream.aclose()
                    return
                await stream.send_all(chunk)


async def test_frames_right_behind_the_handshake_answer(nursery: trio.Nursery) -> None:
    """The venue's first frames in the same segment as the 101, the last one cut: none lost,
    none given twice."""
    cut = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        server = ServerProtocol()
        while not server.events_received() and (data := await stream.receive_some()):
            server.receive_data(data)
            events = server.events_received()
            if events:
                server.send_response(server.accept(events[0]))
                break
        for text in (b"one", b"two", b"three" * 100):
            server.send_text(text)
        answer = b"".join(server.data_to_send())
        await stream.send_all(answer[:-50])  # the 101, two frames, most of the third
        await cut.wait()
        await stream.send_all(answer[-50:])
        await answer_the_close(stream, server)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    port = listeners[0].socket.getsockname()[1]
    got: list[str | bytes] = []
    with trio.fail_after(10):
        async with connector_websockets.open_connection(f"ws://127.0.0.1:{port}/ws") as conn:
            got += await conn.receive_batch()
            cut.set()
            while len(got) < 3:
                got += await conn.receive_batch()
    assert got == ["one", "two", "three" * 100]


async def test_a_close_right_behind_the_answer_ends_the_connection(
    nursery: trio.Nursery,
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        server = ServerProtocol()
        while data := await stream.receive_some():
            server.receive_data(data)
            events = server.events_received()
            if events:
                server.send_response(server.accept(events[0]))
                server.send_text(b"last")
                server.send_close(4001, "maintenance")
                await stream.send_all(b"".join(server.data_to_send()))
                break
        await answer_the_close(stream, server)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    port = listeners[0].socket.getsockname()[1]
    got: list[str | bytes] = []
    with trio.fail_after(10), pytest.raises(TransportError, match="4001 maintenance"):
        async with connector_websockets.open_connection(f"ws://127.0.0.1:{port}/ws") as conn:
            while True:
                got += await conn.receive_batch()
    assert got == ["last"]
