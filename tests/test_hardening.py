"""The guards of ``feedd.web.hardening`` around hypercorn's internals (issue #11.5): the version
they were written for, the internals they rely on (these tests fail loudly when a new version
moves them), and the behaviour they exist for, against a live feedd."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio
import trio._highlevel_serve_listeners as serve_listeners_module
import trio.lowlevel
import wsproto
import wsproto.events as wse
from e2e import running_feedd
from hypercorn.events import Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask
from quart import Response
from quart_trio import QuartTrio
from test_connections import served

from feedd.web import hardening
from feedd.web.peer import Connections

BINANCE = "binance_futures"
ROOT = Path(__file__).parents[1]
WITHIN_S = 20


def test_hypercorn_is_pinned_to_the_line_the_guards_were_written_for() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"hypercorn>=0\.18,<0\.19"', pyproject), "pin hypercorn to <0.19"
    assert importlib.metadata.version("hypercorn").startswith("0.18.")


def original_run() -> str:
    hardening.install()
    return inspect.getsource(TCPServer.run._feedd_original)  # type: ignore[attr-defined]


def test_hypercorn_internals_are_where_the_guards_expect_them() -> None:
    """What the guards rely on, checked one by one: if any of these moves, the guards may
    silently stop guarding, so fail here first."""
    # The class, not an instance, is what the trio worker builds for each connection, by the
    # name imported into hypercorn.trio.run; awaiting one runs self.run().
    assert hypercorn_run.TCPServer is TCPServer
    assert "TCPServer" in hypercorn_run.worker_serve.__code__.co_names
    assert "self.run()" in inspect.getsource(TCPServer.__await__)
    # run() looks protocol_send and _read_data up on the instance (where _guard sets them),
    # arms the keep-alive timer and reads until the client is gone.
    run_source = original_run()
    assert "self.protocol_send" in run_source
    assert "await self._read_data()" in run_source
    assert "self.idle_task.restart" in run_source
    assert "self.stream.socket" in run_source
    assert inspect.signature(TCPServer.__init__).parameters.keys() >= {"config", "stream"}
    # protocol_send: lifecycle events run in the caller's task (the app's, which quart-trio
    # cancels): the reason the guard shields them.
    send_source = inspect.getsource(TCPServer.protocol_send)
    assert "await self._close()" in send_source
    # RawData: the guard writes as hypercorn does, under its lock, with a deadline added.
    assert "async with self.send_lock" in send_source
    assert "await self.stream.send_all(event.data)" in send_source
    assert "self.idle_task.restart" in send_source
    assert "self.idle_task.stop()" in send_source
    assert callable(TrioSingleTask.stop)
    assert "idle" in Updated.__dataclass_fields__
    recycle = inspect.getsource(H11Protocol._maybe_recycle)
    assert "Updated(idle=True)" in recycle and "Closed()" in recycle
    # trio's accept loop: the logger and message AcceptErrors filters.
    assert serve_listeners_module.LOGGER.name == hardening.ACCEPT_LOGGER
    assert '"accept returned %s' in inspect.getsource(serve_listeners_module)


def test_only_servers_started_with_a_server_config_are_guarded() -> None:
    hardening.install()
    hardening.install()  # idempotent: one wrapper, whatever the number of servers
    assert TCPServer.run._feedd_guarded  # type: ignore[attr-defined]
    assert not getattr(TCPServer.run._feedd_original, "_feedd_guarded", False)  # type: ignore[attr-defined]
    assert "not isinstance(self.config, ServerConfig)" in inspect.getsource(TCPServer.run)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw_connect(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(WITHIN_S):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk


async def test_a_websocket_frame_before_the_101_drops_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a frame with its handshake, before the server's 101, on a request
    the server refuses: hypercorn answers 400 twice and h11 raises on the second. Only that
    connection ends; feedd goes on serving."""
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, client):
        port = port_of(service.url)
        for _ in range(3):
            client_ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            stream = await raw_connect(port)
            handshake = client_ws.send(
                wse.Request(host="evil.example", target="/ws")  # Host refused: 403
            )
            frame = b"\x81\x85" + os.urandom(4) + b"hello"
            await stream.send_all(handshake + frame)
            await read_to_end(stream)
            await stream.aclose()
        assert (await client.get("/health")).status_code == 200
        assert service.state.connections.open <= 1
    # The guard's path was taken (hypercorn also logs the app's failure, with its traceback).
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped a client")]
    assert len(dropped) == 3


async def test_clients_vanishing_mid_write_end_only_their_handlers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/ws clients that reset their connection while feedd writes to them: their handlers end
    quietly (the write's BusyResourceError means the client is gone), nothing is logged as a
    failed handler, and feedd serves on."""
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT", "ETHUSDT"]}) as (
        _sim,
        service,
        client,
    ):
        port = port_of(service.url)
        hub = service.state.hub
        for _ in range(20):
            stream = await raw_connect(port, rcvbuf=4096)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(ws.send(wse.Request(host="127.0.0.1", target="/ws")))
            data = await stream.receive_some(65536)
            ws.receive_data(data)
            assert any(isinstance(e, wse.AcceptConnection) for e in ws.events())
            for topic in ("status", "logs"):
                message = orjson.dumps({"op": "subscribe", "topic": topic, "since": 0}).decode()
                await stream.send_all(ws.send(wse.TextMessage(data=message)))
            with trio.fail_after(WITHIN_S):
                await stream.receive_some(10)  # the server is writing to us
            # Flood its outbox so a write is in flight when we vanish.
            target = next(iter(c for c in hub.clients if c.status))
            for _ in range(50):
                target.offer("x" * 4096)
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.socket.close()
            with trio.fail_after(WITHIN_S):
                await service.state.connections.wait_until(lambda c: c.open == 0)
        assert not hub.clients
        assert (await client.get("/health")).status_code == 200
    failed = [r for r in caplog.records if "unhandled error" in r.getMessage() or r.exc_info]
    assert not [r for r in failed if r.levelno >= logging.ERROR], failed


async def test_a_ws_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    """A /ws client that stops reading fills its socket; hypercorn's write to it cannot be
    cancelled (shielded, no deadline), so once the client overflows the handler cuts the
    connection through the server's registry and ends; nothing stays behind."""
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, client):
        port = port_of(service.url)
        hub = service.state.hub
        stream = await raw_connect(port, rcvbuf=4096)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(wse.Request(host="127.0.0.1", target="/ws")))
        ws.receive_data(await stream.receive_some(65536))
        assert any(isinstance(e, wse.AcceptConnection) for e in ws.events())
        message = orjson.dumps({"op": "subscribe", "topic": "status"}).decode()
        await stream.send_all(ws.send(wse.TextMessage(data=message)))
        with trio.fail_after(WITHIN_S):
            await stream.receive_some(10)  # the reply: the handler is in the hub by now
        assert len(hub.clients) == 1
        target = next(iter(hub.clients))
        try:
            # ~16 MB queued: far more than the kernel's buffers take, so the writer blocks.
            for _ in range(200):
                target.offer("x" * 80_000)
            target.overflowed.set()  # what publish() does when the outbox is full
            with trio.fail_after(WITHIN_S):
                await service.state.connections.wait_until(lambda c: c.open == 0)
        finally:
            await stream.aclose()  # unblocks the server's write if the test failed
        assert not hub.clients and hub.overflows == 1
        assert (await client.get("/health")).status_code == 200


async def test_a_client_that_stops_reading_a_response_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A response bigger than the socket buffers to a client that reads none of it: hypercorn's
    write had no deadline (the slot was held for ever, and shutdown hung on it); the guard
    closes the connection once a write has stalled for ``WRITE_STALL_S``."""
    monkeypatch.setattr(hardening, "WRITE_STALL_S", 1.0)
    app = QuartTrio("stall-test")

    @app.get("/big")
    async def big() -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(400):
                yield b"x" * 100_000

        return Response(chunks(), mimetype="application/octet-stream")

    connections = Connections(total=8, per_client=8)
    async with served(app, connections) as port:
        stream = await raw_connect(port, rcvbuf=4096)
        try:
            await stream.send_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with trio.fail_after(WITHIN_S):
                await connections.wait_until(lambda c: c.stalled == 1 and c.open == 0)
        finally:
            await stream.aclose()
