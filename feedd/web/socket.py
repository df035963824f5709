"""``/ws``: one socket per client; JSON subscribe/unsubscribe for candles, status and logs.

Three tasks per client: one reads requests, one writes the outbox, one watches for the
server closing or the outbox overflowing, and closes the socket with the right code.
What one client may ask is bounded: message size, messages per second, symbols per message
and candle filters per connection (``feedd.web.filters``); the excess is answered with an
error and changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import trio
from quart import Blueprint, websocket

from feedd.web import params
from feedd.web.errors import ApiError
from feedd.web.filters import CandleFilter, TooManyFilters
from feedd.web.live import Client
from feedd.web.peer import shut_down_peer
from feedd.web.state import AppState
from feedd.web.state import current_state as state

live = Blueprint("live", __name__)

MAX_CLIENT_MESSAGE = 4096
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
TOPICS = ("candles", "status", "logs")
CLOSE_TIMEOUT_S = 1.0
#: client messages per second, sustained; a burst of up to ``MESSAGE_BURST`` passes
MESSAGES_PER_S = 20.0
MESSAGE_BURST = 40
#: symbols one candle subscription may list
MAX_SYMBOLS_PER_MESSAGE = 100


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


class _MessageBudget:
    """A token bucket: what a client's messages may cost the event loop per second."""

    def __init__(self, rate: float = MESSAGES_PER_S, burst: int = MESSAGE_BURST) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = trio.current_time()

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


async def _read(app_state: AppState, client: Client) -> None:
    """Handle requests until the client goes away."""
    budget = _MessageBudget()
    while True:
        raw = await websocket.receive()
        try:
            if not budget.take():
                # Answered, not applied: a flood still fills the client's own outbox and
                # ends with 1008, never with work for the loop.
                raise ApiError(429, f"too many messages: at most {MESSAGES_PER_S:g} per second")
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


def _filters(request: dict[str, Any]) -> list[CandleFilter]:
    """The candle filters a request names: one, or one per entry of ``symbols``."""

    def field(name: str, check: Any) -> str | None:
        value = request.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string", name)
        return str(check(value))

    exchange = field("exchange", params.exchange_name)
    interval = field("interval", params.interval)
    symbols = request.get("symbols")
    if symbols is None:
        return [CandleFilter(exchange, field("symbol", params.symbol), interval)]
    if "symbol" in request:
        raise ApiError(400, "give symbol or symbols, not both", "symbols")
    if not isinstance(symbols, list) or not symbols:
        raise ApiError(400, "symbols must be a non-empty array of strings", "symbols")
    if len(symbols) > MAX_SYMBOLS_PER_MESSAGE:
        raise ApiError(400, f"at most {MAX_SYMBOLS_PER_MESSAGE} symbols per message", "symbols")
    out = []
    for index, symbol in enumerate(symbols):
        if not isinstance(symbol, str):
            raise ApiError(400, "symbols must be strings", f"symbols[{index}]")
        try:
            out.append(CandleFilter(exchange, params.symbol(symbol), interval))
        except ApiError as exc:
            raise ApiError(exc.status, exc.message, f"symbols[{index}]") from None
    return out


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
        wanted = _filters(request)
        index = app_state.hub.filters
        if op == "subscribe":
            try:
                index.add(client, wanted)
            except TooManyFilters as exc:
                raise ApiError(400, str(exc), "topic") from None
        elif len(wanted) == 1 and wanted[0].everything:
            index.clear(client)
        else:
            index.discard(client, wanted)
        first = wanted[0]
        reply.update(
            {
                k: v
                for k, v in (
                    ("exchange", first.exchange),
                    ("symbol", first.symbol if "symbols" not in request else None),
                    ("symbols", [f.symbol for f in wanted] if "symbols" in request else None),
                    ("interval", first.interval),
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
