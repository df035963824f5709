"""A small h11 server: one port per venue answers REST and upgrades WebSocket requests.

Plain h11 rather than an ASGI server keeps a request at tens of microseconds and lets the
WebSocket side own the raw TCP stream (needed to stall it or reset it on purpose).
"""

from __future__ import annotations

from typing import Protocol

import h11
import trio

from feedd.sim.rest import Response, json_response

MAX_BODY = 1 << 20


class HttpApp(Protocol):
    def handle_http(self, method: str, target: str, body: bytes) -> Response: ...
    def ws_accepts(self, path: str) -> bool: ...
    async def serve_ws(
        self,
        stream: trio.SocketStream,
        target: str,
        headers: list[tuple[bytes, bytes]],
        trailing: bytes,
    ) -> None: ...


async def open_listener(host: str, port: int) -> trio.SocketListener:
    listeners = await trio.open_tcp_listeners(port, host=host)
    return listeners[0]


def listener_port(listener: trio.SocketListener) -> int:
    port: int = listener.socket.getsockname()[1]
    return port


async def serve_http(
    app: HttpApp,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(app, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the client went away or spoke nonsense; nothing to report to anyone
        finally:
            await trio.aclose_forcefully(stream)

    # Owning the listener here closes it even if we are cancelled before serving anything.
    async with listener:
        task_status.started()
        await trio.serve_listeners(handler, [listener])


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> h11.Event | type:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(65536)
        conn.receive_data(data)


async def _serve_connection(app: HttpApp, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = await _next_event(conn, stream)
        if not isinstance(event, h11.Request):
            return  # ConnectionClosed or PAUSED: nothing more to serve
        request = event
        body = bytearray()
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        target = request.target.decode("latin-1")
        path = target.split("?", 1)[0]
        headers = [(bytes(k), bytes(v)) for k, v in request.headers]
        upgrade = dict(headers).get(b"upgrade", b"").lower()
        if upgrade == b"websocket":
            if app.ws_accepts(path):
                trailing, _ = conn.trailing_data
                await app.serve_ws(stream, target, headers, bytes(trailing))
                return
            await _send(conn, stream, json_response({"error": "not found"}, 404))
            return
        response = app.handle_http(request.method.decode(), target, bytes(body))
        await _send(conn, stream, response)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _send(conn: h11.Connection, stream: trio.SocketStream, response: Response) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
