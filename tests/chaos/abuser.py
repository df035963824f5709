"""The abusive clients of ``test_client_abuse``, runnable as a process of their own so their
work does not slow the test's event loop (which runs the simulator and the measuring client).

    python tests/chaos/abuser.py PORT SILENT VANISHING REQUESTS

connects SILENT never-reading /ws clients and VANISHING ones that disappear mid-message
while REQUESTS API requests flood in, prints one JSON line (the HTTP status counts and how
many silent clients are connected), then holds the silent sockets until stdin closes.

    python tests/chaos/abuser.py connections PORT COUNT
    python tests/chaos/abuser.py slowbodies PORT COUNT

keep COUNT connections from four loopback addresses (127.0.0.2-5) open until stdin closes,
opening a new one whenever feedd closes one: idle keep-alive connections (one request, then
nothing; three in four), silent ones and ones that never finish their headers; or POSTs
announcing a 100-byte body that send one byte of it. Each prints one JSON line once the
first COUNT are open, and one with its counts at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys

import httpx
import orjson
import trio
import wsproto
import wsproto.events as wse

FLOOD_WORKERS = 40


class RawClient:
    """A WebSocket client on a bare socket with a tiny receive buffer: it can stop reading
    and let the server's queue fill, or vanish mid-frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, port: int, rcvbuf: int = 4096) -> RawClient:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(
            client.ws.send(wse.Request(host=f"127.0.0.1:{port}", target="/ws"))
        )
        while not any(isinstance(e, wse.AcceptConnection) for e in client._events()):
            data = await client.stream.receive_some(65536)
            assert data, "feedd refused the WebSocket"
            client.ws.receive_data(data)
        return client

    def _events(self) -> list[wse.Event]:
        return list(self.ws.events())

    async def send_json(self, message: dict[str, object]) -> None:
        await self.stream.send_all(
            self.ws.send(wse.TextMessage(data=orjson.dumps(message).decode()))
        )

    async def close_code(self) -> int | None:
        """Read to the end: the close code the server sent, or None (no close frame)."""
        while True:
            for event in self._events():
                if isinstance(event, wse.CloseConnection):
                    return event.code
            try:
                data = await self.stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return None
            self.ws.receive_data(data)

    def reset(self) -> None:
        """Vanish: close with a TCP reset, whatever is in flight."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.stream.socket.close()


async def vanish(port: int, n: int) -> None:
    """Three ways to disappear mid-message, by turns."""
    if n % 3 == 0:  # mid-handshake: half an HTTP request
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
        await stream.aclose()
        return
    client = await RawClient.connect(port)
    await client.send_json({"op": "subscribe", "topic": "candles"})
    if n % 3 == 1:  # mid-frame: a header announcing 200 bytes, then 10 of them
        mask = os.urandom(4)
        await client.stream.send_all(b"\x81\xfe\x00\xc8" + mask + b"0123456789")
    else:  # mid-download: take a few bytes of a candles message, then reset
        await client.stream.receive_some(10)
    client.reset()


async def connect_silent(port: int, into: list[RawClient]) -> None:
    """A client that subscribes to every topic and then never reads."""
    client = await RawClient.connect(port)
    await client.send_json({"op": "subscribe", "topic": "candles"})
    await client.send_json({"op": "subscribe", "topic": "status"})
    await client.send_json({"op": "subscribe", "topic": "logs", "since": 0})
    into.append(client)


async def flood(base_url: str, counts: dict[int, int], requests: int) -> None:
    """``requests`` API requests from FLOOD_WORKERS at once: reads, junk and bad input."""
    paths = [
        "/ohlcv/binance_futures/BTCUSDT/1m?limit=1000",
        "/ohlcv/okx_futures/ETHUSDT/1h?limit=100",
        "/ohlcv/bybit_futures/SOLUSDT/1m?format=csv",
        "/status",
        "/health",
        "/metrics",
        "/exchanges",
        "/logs?since=0",
        "/ohlcv/nowhere/BTCUSDT/1m",
        "/ohlcv/binance_futures/btc/1m",
        "/" + "x" * 5000,
    ]
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=FLOOD_WORKERS)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for n in todo:
                if n % 10 == 9:  # a state change without its confirmation: 400, nothing done
                    # (A body the server refuses unread can leave an httpx keep-alive
                    # connection without an answer; see the report of issue #6. Not here.)
                    response = await client.post("/deleteDatabase", json={"confirm": "no"})
                else:
                    response = await client.get(paths[n % len(paths)])
                counts[response.status_code] = counts.get(response.status_code, 0) + 1

        async with trio.open_nursery() as nursery:
            for _ in range(FLOOD_WORKERS):
                nursery.start_soon(worker)


async def abuse(port: int, silent_count: int, vanishing: int, requests: int) -> None:
    counts: dict[int, int] = {}
    silent: list[RawClient] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, f"http://127.0.0.1:{port}", counts, requests)
        limiter = trio.CapacityLimiter(50)
        for n in range(silent_count + vanishing):
            async with limiter:
                if n < silent_count:
                    nursery.start_soon(connect_silent, port, silent)
                else:
                    nursery.start_soon(vanish, port, n)
    http = {str(code): n for code, n in counts.items()}
    print(orjson.dumps({"http": http, "silent": len(silent)}).decode(), flush=True)
    await trio.to_thread.run_sync(sys.stdin.read)  # hold the silent sockets until told
    for client in silent:
        await client.stream.aclose()


ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
SLOW_BODY = (
    b"POST /deleteDatabase HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{"
)


async def _open(port: int, source: str) -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def _until_closed(stream: trio.SocketStream) -> bytes:
    """Read until feedd closes the connection; what it answered."""
    data = b""
    with contextlib.suppress(trio.BrokenResourceError, OSError):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return data


async def hold_connections(port: int, count: int, kind: str) -> None:
    """Keep ``count`` connections of ``kind`` open, replacing each one feedd closes."""
    counts: dict[str, int] = {}
    opened = trio.Event()
    started = 0

    async def one(n: int) -> None:
        nonlocal started
        source = ADDRESSES[n % len(ADDRESSES)]
        first = True
        while True:
            try:
                stream = await _open(port, source)
            except OSError:
                counts["connect_failed"] = counts.get("connect_failed", 0) + 1
                await trio.sleep(0.1)
                continue
            if kind == "slowbodies":
                await stream.send_all(SLOW_BODY)
            elif n % 8 == 7:  # headers never finished
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            elif n % 8 != 6:  # (6: silent) the rest idle keep-alive: one request, then nothing
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if first:
                first = False
                started += 1
                if started == count:
                    opened.set()
            answer = await _until_closed(stream)
            status = answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "none"
            counts[status] = counts.get(status, 0) + 1

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
        await opened.wait()
        print(orjson.dumps({"open": count}).decode(), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()
    print(orjson.dumps({"closed_by_feedd": counts}).decode(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] in ("connections", "slowbodies"):
        trio.run(hold_connections, int(sys.argv[2]), int(sys.argv[3]), sys.argv[1])
        sys.exit(0)
    port, silent_count, vanishing, requests = map(int, sys.argv[1:5])
    trio.run(abuse, port, silent_count, vanishing, requests)
