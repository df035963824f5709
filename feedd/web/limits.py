"""Admission of HTTP requests: a cap on requests in progress, per client address and overall.

feedd runs ingest, the /ws fan-out and the API on one event loop, and trio runs every ready
task once per turn of the loop: forty requests in progress put forty handler steps between
two steps of ingest (socket -> parse -> writer -> hub takes several turns). Capping what is
in progress bounds the API's share of each turn; the waiting requests cost nothing but
memory, and are served in arrival order. The API's own throughput is the same on a busy loop.
A slot is held until the answer starts, not until a (slow) client has downloaded it.

A client address with more than ``MAX_WAITING_PER_CLIENT`` requests waiting is answered 429
with Retry-After at once, without Quart: refusing must cost less than serving. An answer
sent before a request's body was read closes the connection (see ``closing_headers``).

A request's body is received whole before the request asks for a slot, within
``BODY_TIMEOUT_S`` of its headers and up to ``MAX_BODY_BYTES``: a client that announces a body
and sends it slowly (or never) would otherwise hold a slot while the handler waits for it, and
eight such clients blocked the API for everyone. Too slow is answered 408, too big 413, and
both close the connection. Bodies held at once are bounded too (``MAX_BUFFERED_BYTES``, 503
past it): they are read before the token is checked. (How long headers may take is the
server's keep-alive timeout: hypercorn's idle timer runs from the connection or the last
answer until a request's headers are complete.)

WebSocket handshakes are not counted: /ws clients are bounded by their own outboxes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import orjson
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
    WebsocketScope,
)

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

#: requests of one client address in progress at once; a dashboard opens about four
MAX_ACTIVE_PER_CLIENT = 4
#: requests in progress at once over all clients
MAX_ACTIVE = 8
#: requests of one client address waiting for their turn before it is answered 429
MAX_WAITING_PER_CLIENT = 64
RETRY_AFTER_S = 1
#: the largest request body accepted (a config with thousands of symbols is ~150 kB)
MAX_BODY_BYTES = 1024 * 1024
#: a request's whole body must arrive within this many seconds of its headers
BODY_TIMEOUT_S = 10.0
#: request bodies held at once over all requests; past it a body is refused 503 (the bodies
#: are received before the token is checked: without a bound, every connection could make
#: feedd hold 1 MiB)
MAX_BUFFERED_BYTES = 32 * 1024 * 1024


def has_body(scope: HTTPScope | WebsocketScope) -> bool:
    """Whether the request announces a body (which an early answer may leave unread)."""
    for raw_name, value in scope["headers"]:
        name = raw_name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def closing_headers(scope: HTTPScope) -> list[tuple[bytes, bytes]]:
    """``Connection: close`` for an answer that may go out before the request's body came.

    hypercorn closes such a connection once the answer is sent, without saying so; the
    client may then put the connection back in its pool, and a request sent on it races
    the close. Saying it in the answer makes the client drop the connection itself."""
    return [(b"connection", b"close")] if has_body(scope) else []


@attrs.define(eq=False)
class _Gate:
    """One client address's share: its slots, and how many of its requests hold or await one."""

    slots: trio.Semaphore
    users: int = 0


class RequestLimits:
    """ASGI middleware around the app; state lives as long as the app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_client: int = MAX_ACTIVE_PER_CLIENT,
        overall: int = MAX_ACTIVE,
        waiting: int = MAX_WAITING_PER_CLIENT,
        max_body: int = MAX_BODY_BYTES,
        body_timeout: float = BODY_TIMEOUT_S,
        buffer_budget: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._app = app
        self._max_body = max_body
        self._body_timeout = body_timeout
        self._buffer_budget = buffer_budget
        #: bytes of request bodies held (received, or waiting for their request to end)
        self.buffered = 0
        self._per_client = per_client
        self._max_users = per_client + waiting
        self._overall = trio.Semaphore(overall)
        #: only addresses with requests in progress or waiting: the map cannot grow unbounded
        self._gates: dict[str, _Gate] = {}
        #: requests answered 429
        self.refused = 0
        #: requests whose body did not arrive in time (408) or was too big (413)
        self.slow_bodies = 0
        self.big_bodies = 0

    @property
    def addresses(self) -> int:
        """Client addresses with requests in progress or waiting."""
        return len(self._gates)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        gate = self._gates.get(address)
        if gate is None:
            gate = self._gates[address] = _Gate(trio.Semaphore(self._per_client))
        if gate.users >= self._max_users:
            self.refused += 1
            await _too_many(scope, send)
            return
        gate.users += 1
        try:
            await self._admit(scope, receive, send, gate)
        finally:
            self._leave(gate, address)

    async def _admit(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, gate: _Gate
    ) -> None:
        if has_body(scope):
            body = await self._receive_body(scope, receive, send)
            if body is None:
                return
            try:
                await self._run(scope, _replay(body, receive), send, gate)
            finally:
                self.buffered -= len(body)
        else:
            await self._run(scope, receive, send, gate)

    async def _run(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, gate: _Gate
    ) -> None:
        """Run the app once ``gate`` and the overall cap give this request a slot."""
        held = False

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._overall.release()
                gate.slots.release()

        async def send_releasing(message: ASGISendEvent) -> None:
            # The handler's work is done once its answer starts (Quart builds the whole
            # response first); a client slow to download it must not hold a slot, or a
            # few slow readers would starve the API.
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            # trio's semaphores queue their waiters in order: no request waits forever.
            await gate.slots.acquire()
            try:
                await self._overall.acquire()
            except BaseException:
                gate.slots.release()
                raise
            held = True
            await self._app(scope, receive, send_releasing)
        finally:
            release()

    def _leave(self, gate: _Gate, address: str) -> None:
        gate.users -= 1
        if not gate.users:
            del self._gates[address]

    async def _receive_body(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> bytes | None:
        """The whole body, or None once the client was answered (408, 413, 503) or left.
        A body returned stays counted in ``buffered`` until the caller gives it back."""
        announced = _content_length(scope)
        if announced is not None and announced > self._max_body:
            self.big_bodies += 1
            await _refuse(scope, send, 413, f"the body is limited to {self._max_body} bytes")
            return None
        parts: list[bytes] = []
        size = 0
        try:
            with trio.move_on_after(self._body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect: nobody to answer
                        return None
                    chunk = message.get("body", b"")
                    if size + len(chunk) > self._max_body:
                        self.big_bodies += 1
                        await _refuse(
                            scope, send, 413, f"the body is limited to {self._max_body} bytes"
                        )
                        return None
                    if self.buffered + len(chunk) > self._buffer_budget:
                        self.refused += 1
                        await _refuse(
                            scope,
                            send,
                            503,
                            f"too many request bodies in progress; retry in {RETRY_AFTER_S} s",
                            [(b"retry-after", str(RETRY_AFTER_S).encode())],
                        )
                        return None
                    size += len(chunk)
                    self.buffered += len(chunk)
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        size = 0  # handed over with the body
                        return b"".join(parts)
            self.slow_bodies += 1
            await _refuse(
                scope, send, 408, f"the request body did not arrive within {self._body_timeout:g} s"
            )
            return None
        finally:
            self.buffered -= size


def _content_length(scope: HTTPScope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses a malformed length before we see it
    return None


def _replay(body: bytes, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """A ``receive`` that hands the app the buffered body, then what the server sends next."""
    pending = True

    async def replay() -> ASGIReceiveEvent:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_many(scope: HTTPScope, send: ASGISendCallable) -> None:
    await _refuse(
        scope,
        send,
        429,
        f"too many requests in progress from your address; retry in {RETRY_AFTER_S} s",
        [(b"retry-after", str(RETRY_AFTER_S).encode())],
    )


async def _refuse(
    scope: HTTPScope,
    send: ASGISendCallable,
    status: int,
    error: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer ``status`` with a JSON error, without the app."""
    body = orjson.dumps({"error": error})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
        *closing_headers(scope),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
