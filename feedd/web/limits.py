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

WebSocket handshakes are not counted: /ws clients are bounded by their own outboxes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import orjson
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
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
    ) -> None:
        self._app = app
        self._per_client = per_client
        self._max_users = per_client + waiting
        self._overall = trio.Semaphore(overall)
        #: only addresses with requests in progress or waiting: the map cannot grow unbounded
        self._gates: dict[str, _Gate] = {}
        #: requests answered 429
        self.refused = 0

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
            gate.users -= 1
            if not gate.users:
                del self._gates[address]


async def _too_many(scope: HTTPScope, send: ASGISendCallable) -> None:
    body = orjson.dumps(
        {"error": f"too many requests in progress from your address; retry in {RETRY_AFTER_S} s"}
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        *closing_headers(scope),
    ]
    await send(
        {"type": "http.response.start", "status": 429, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
