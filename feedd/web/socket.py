"""``/ws``: one socket per client; JSON subscribe/unsubscribe for candles, status and logs.

Three tasks per client: one reads requests, one writes the outbox, one watches for the
server closing or the outbox overflowing, and closes the socket with the right code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import trio
from quart import Blueprint, websocket

from feedd.web import params
from feedd.web.errors import ApiError
from feedd.web.live import CandleFilter, Client
from feedd.web.peer import shut_down_peer
from feedd.web.state import AppState
from feedd.web.state import current_state as state

live = Blueprint("live", __name__)

MAX_CLIENT_MESSAGE = 4096
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
TOPICS = ("candles", "status", "logs")
CLOSE_TIMEOUT_S = 1.0


@live.websocket("/ws")
async def ws() -> None:
    app_state = state()
    client = Client()
    app_state.hub.add(client)
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    stopping, finished = trio.Event(), trio.Event()
    peer = _peer()
    async with trio.open_nursery() as outer:

        async def guard() -> None:
            # hypercorn writes to the socket in a shielded scope without a deadline: a
            # client that stopped reading would hold our writer (and the close frame)
            # forever. Once we decide to stop, give it CLOSE_TIMEOUT_S, then cut it off.
            await stopping.wait()
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await finished.wait()
            if not finished.is_set() and peer is not None:
                shut_down_peer(*peer)

        outer.start_soon(guard)
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    nonlocal code, reason
                    async with trio.open_nursery() as race:

                        async def overflow() -> None:
                            nonlocal code, reason
                            await client.overflowed.wait()
                            code, reason = CLOSE_POLICY, "client too slow"
                            race.cancel_scope.cancel()

                        async def closing() -> None:
                            await app_state.closing.wait()
                            race.cancel_scope.cancel()

                        race.start_soon(overflow)
                        race.start_soon(closing)
                    stopping.set()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(_write, client)
                await websocket.accept()
                await _read(app_state, client)
            with contextlib.suppress(Exception):  # the client may be gone already
                await websocket.close(code, reason)
            if code == CLOSE_POLICY and peer is not None:
                # A client too slow to read will not answer the close either; hypercorn
                # would keep its socket waiting. Shutting it down still delivers the
                # queued close frame, then the FIN.
                shut_down_peer(*peer)
        finally:
            finished.set()
            app_state.hub.remove(client)
            client.outbox_send.close()
            outer.cancel_scope.cancel()


def _peer() -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(server, client) addresses of this connection, to find its socket."""
    server, client = websocket.scope.get("server"), websocket.scope.get("client")
    if not server or not client or server[1] is None:
        return None
    return (str(server[0]), int(server[1])), (str(client[0]), int(client[1]))


async def _write(client: Client) -> None:
    while True:
        try:
            texts = await client.next_messages()
        except trio.EndOfChannel:
            return
        for text in texts:
            await websocket.send(text)


async def _read(app_state: AppState, client: Client) -> None:
    """Handle requests until the client goes away."""
    while True:
        raw = await websocket.receive()
        try:
            request = _decode(raw)
            reply = _handle(app_state, client, request)
        except ApiError as exc:
            error: dict[str, Any] = {"type": "error", "error": exc.message}
            if exc.field:
                error["field"] = exc.field
            client.offer(orjson.dumps(error).decode())
            continue
        client.offer(orjson.dumps(reply).decode())
        if request.get("topic") == "logs" and request.get("op") == "subscribe":
            app_state.hub.send_logs(client)


def _decode(raw: str | bytes) -> dict[str, Any]:
    if len(raw) > MAX_CLIENT_MESSAGE:
        raise ApiError(400, f"messages are limited to {MAX_CLIENT_MESSAGE} bytes")
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "not valid JSON") from None
    if not isinstance(request, dict):
        raise ApiError(400, 'send a JSON object such as {"op": "subscribe", ...}')
    return request


def _filter(request: dict[str, Any]) -> CandleFilter:
    def field(name: str, check: Any) -> str | None:
        value = request.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string", name)
        return str(check(value))

    return CandleFilter(
        field("exchange", params.exchange_name),
        field("symbol", params.symbol),
        field("interval", params.interval),
    )


def _handle(app_state: AppState, client: Client, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "ping":
        return {"type": "pong"}
    if op not in ("subscribe", "unsubscribe"):
        raise ApiError(400, 'op must be "subscribe", "unsubscribe" or "ping"', "op")
    topic = request.get("topic")
    if topic not in TOPICS:
        raise ApiError(400, f"topic must be one of {', '.join(TOPICS)}", "topic")
    reply: dict[str, Any] = {"type": f"{op}d", "topic": topic}
    if topic == "candles":
        wanted = _filter(request)
        if op == "subscribe":
            client.filters.add(wanted)
        elif wanted.everything:
            client.filters.clear()
        else:
            client.filters.discard(wanted)
        reply.update(
            {
                k: v
                for k, v in (
                    ("exchange", wanted.exchange),
                    ("symbol", wanted.symbol),
                    ("interval", wanted.interval),
                )
                if v is not None
            }
        )
    elif topic == "status":
        client.status = op == "subscribe"
    elif op == "unsubscribe":
        client.logs_after = None
    else:
        since = request.get("since")
        if since is not None and (
            not isinstance(since, int) or isinstance(since, bool) or since < 0
        ):
            raise ApiError(400, "since must be a non-negative integer", "since")
        client.logs_after = app_state.logs.last_seq if since is None else since
    return reply
