"""Server-side WebSocket plumbing on wsproto over a trio stream, with the knobs a fake needs.

One writer task drains an outbox (so bursts go out in one ``send_all``), text frames are
encoded by hand (cheap, and the outbox can hold pre-built bytes), and the peer can stall,
ping, close with a close frame, or abort the TCP connection without one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable

import trio
import wsproto
import wsproto.events as wse
from trio.lowlevel import ParkingLot

#: the pusher waits while this many bytes are queued, so a slow reader slows the sim
HIGH_WATER = 1 << 20
CLOSE_WAIT_S = 2.0


class Gate:
    """Open unless stalled; a stall lasts ``seconds`` of trio time or until ``open()``."""

    def __init__(self) -> None:
        self._closed_until: float | None = None
        self._lot = ParkingLot()

    def is_open(self) -> bool:
        until = self._closed_until
        return until is None or trio.current_time() >= until

    def close(self, seconds: float | None = None) -> None:
        self._closed_until = float("inf") if seconds is None else trio.current_time() + seconds

    def open(self) -> None:
        self._closed_until = None
        self._lot.unpark_all()

    async def wait_open(self) -> None:
        while not self.is_open():
            assert self._closed_until is not None
            with trio.move_on_at(self._closed_until):
                await self._lot.park()


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 1 << 16:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


class WsPeer:
    """One accepted WebSocket connection (after the HTTP upgrade)."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection, gate: Gate) -> None:
        self.stream = stream
        self.ws = ws
        self.gate = gate
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writer_lot = ParkingLot()
        self._room_lot = ParkingLot()
        self._flushed_lot = ParkingLot()
        self._sending = False
        self._parts: list[str] = []
        self.remote_closed = trio.Event()
        self.local_closed = False
        self.last_sent = trio.current_time()
        self.frames_sent = 0
        #: called with time.monotonic() right before the queued bytes go to the socket
        self._on_send: list[Callable[[float], None]] = []

    # ------------------------------------------------------------------ outgoing

    def send_raw_nowait(self, data: bytes) -> None:
        if self.local_closed:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        self._writer_lot.unpark_all()

    def send_text_nowait(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.frames_sent += 1
        self.send_raw_nowait(text_frame(payload))

    def on_next_send(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(time.monotonic())`` as what is queued now is written to the socket
        (never if the connection ends first): the benchmark's send time, without the time the
        frames spent being built and queued."""
        self._on_send.append(callback)

    async def wait_room(self) -> None:
        while self._out_bytes > HIGH_WATER:
            await self._room_lot.park()

    def send_ping_nowait(self, payload: bytes) -> None:
        if self.local_closed:
            return
        self.send_raw_nowait(self.ws.send(wse.Ping(payload=payload)))

    def send_close_nowait(self, code: int, reason: str) -> None:
        if self.local_closed:
            return
        self.send_raw_nowait(self.ws.send(wse.CloseConnection(code=code, reason=reason)))
        self.local_closed = True

    async def flush(self) -> None:
        while self._out or self._sending:
            await self._flushed_lot.park()

    async def run_writer(self) -> None:
        while True:
            if not self._out or not self.gate.is_open():
                if self._out:
                    await self.gate.wait_open()
                else:
                    self._flushed_lot.unpark_all()
                    await self._writer_lot.park()
                continue
            chunk = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._room_lot.unpark_all()
            if self._on_send:
                now = time.monotonic()
                for callback in self._on_send:
                    callback(now)
                self._on_send.clear()
            self._sending = True
            try:
                await self.stream.send_all(chunk)
            finally:
                self._sending = False
            self.last_sent = trio.current_time()

    def abort(self) -> None:
        """Make the eventual close a TCP reset: no close frame, no FIN handshake."""
        # OSError: already closed by the peer, nothing left to abort.
        with contextlib.suppress(OSError):
            linger = struct.pack("ii", 1, 0)
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)

    # ------------------------------------------------------------------ incoming

    def feed(self, data: bytes | None) -> None:
        self.ws.receive_data(data)

    async def receive(self) -> list[wse.Event]:
        """The next inbound events, text messages joined and pings answered.

        While the gate is shut nothing is read, so pings go unanswered like on a frozen
        server. An empty list means the connection has ended.
        """
        while True:
            await self.gate.wait_open()
            out: list[wse.Event] = []
            for event in self.ws.events():
                if isinstance(event, wse.TextMessage | wse.BytesMessage):
                    # Binary frames are read as UTF-8 text: lenient, like the venues' parsers.
                    data = event.data
                    self._parts.append(
                        data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
                    )
                    if not event.message_finished:
                        continue
                    event = wse.TextMessage(data="".join(self._parts))
                    self._parts.clear()
                elif isinstance(event, wse.Ping) and not self.local_closed:
                    self.send_raw_nowait(self.ws.send(event.response()))
                elif isinstance(event, wse.CloseConnection):
                    if not self.local_closed:
                        self.send_raw_nowait(self.ws.send(event.response()))
                        self.local_closed = True
                    self.remote_closed.set()
                out.append(event)
            if out or self.remote_closed.is_set():
                return out
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.remote_closed.set()
                return []
            self.feed(data)
