"""``feedctl tail``: follow committed candles over feedd's ``/ws`` until Ctrl-C or ``--count``.

Runs its own ``trio.run``; the token goes in the handshake's Authorization header.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio
import trio_websocket

from feedd.ctl import text
from feedd.ctl.client import Refused, Unreachable, refusal
from feedd.engine.ws import unwrapped_nursery

CLOSE_TIMEOUT_S = 2.0
#: close codes that mean the server went away rather than refused us
GONE = {1001, 1006}
#: committed batches can be large; a deep queue keeps the library answering pings meanwhile
MESSAGE_QUEUE_SIZE = 64
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def ws_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def subscription(args: argparse.Namespace) -> dict[str, str]:
    message = {"op": "subscribe", "topic": "candles"}
    for name in ("exchange", "symbol", "interval"):
        if getattr(args, name):
            message[name] = getattr(args, name)
    return message


def run(client: object, args: argparse.Namespace) -> None:
    """The command's entry from ``main``; the HTTP client is not used."""
    try:
        trio.run(follow, args)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Ctrl-C is how tail is meant to end: exit status 0. trio may deliver it inside the
        # library's reader task, so it can arrive grouped with the lost connection it caused.
        if not isinstance(exc, KeyboardInterrupt) and exc.subgroup(KeyboardInterrupt) is None:
            raise


def os_reason(exc: OSError) -> str:
    """trio reports every failed address in a group; the first one says what happened."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        first = cause.exceptions[0]
        if isinstance(first, OSError) and first.errno is not None:
            return f"[Errno {first.errno}] {os.strerror(first.errno)}"
    return str(exc)


@asynccontextmanager
async def open_feed(
    base_url: str, token: str | None, connect_s: float
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Connect with our own TCP stream (closed for sure in ``finally``) and handshake."""
    parts = urlsplit(ws_url(base_url))
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_s):
            stream = tcp = await trio.open_tcp_stream(host, port)
            if secure:
                stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=host)
                await stream.do_handshake()
    except trio.TooSlowError:
        raise Unreachable(f"cannot reach {base_url}: timed out") from None
    except OSError as exc:
        raise Unreachable(f"cannot reach {base_url}: {os_reason(exc)}") from None
    except trio.BrokenResourceError as exc:
        raise Unreachable(f"cannot reach {base_url}: {exc}") from None
    try:
        async with unwrapped_nursery() as nursery:
            try:
                with trio.fail_after(connect_s):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        # the Host header: with its port (and no user info), as HTTP has it
                        parts.netloc.rpartition("@")[2],
                        parts.path,
                        extra_headers=headers,
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=MAX_MESSAGE_SIZE,
                    )
            except trio.TooSlowError:
                raise Unreachable(f"no WebSocket handshake from {base_url} (timed out)") from None
            except (trio_websocket.HandshakeError, OSError) as exc:
                raise Unreachable(f"WebSocket handshake with {base_url} failed: {exc}") from None
            try:
                yield ws
            finally:
                # Shielded: even on Ctrl-C the server gets a close frame, not a 1006.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as exc:
        # Raised by the library's reader task, so it leaves through the nursery.
        raise refusal(exc.status_code, exc.body or b"") from None
    finally:
        await trio.aclose_forcefully(stream)


async def follow(args: argparse.Namespace) -> None:
    printed = 0
    async with open_feed(args.url, args.token, args.timeout) as ws:
        await ws.send_message(orjson.dumps(subscription(args)).decode())
        # The header waits for the first candle, so that a refusal leaves stdout empty.
        need_header = not args.json
        while args.count is None or printed < args.count:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise closed_error(exc.reason) from None
            try:
                doc = orjson.loads(message)
            except orjson.JSONDecodeError:
                raise Refused("the server sent a message that is not JSON") from None
            if not isinstance(doc, dict):
                continue
            if doc.get("type") == "error":
                field = f" (field: {doc['field']})" if doc.get("field") else ""
                raise Refused(f"{doc.get('error', 'error')}{field}")
            if doc.get("type") != "candles":
                continue
            for candle in doc.get("data") or []:
                if args.closed and not candle.get("closed"):
                    continue
                if args.count is not None and printed >= args.count:
                    break
                if need_header:
                    print(header())
                    need_header = False
                print(orjson.dumps(candle).decode() if args.json else line(candle))
                printed += 1
            sys.stdout.flush()


def closed_error(reason: trio_websocket.CloseReason | None) -> Refused | Unreachable:
    code = reason.code if reason else 1006
    why = f"{code} {reason.reason or reason.name}" if reason else "1006"
    if code in GONE:
        return Unreachable(f"lost the connection to feedd ({why})")
    return Refused(f"the server closed the stream ({why})")


COLUMNS = (
    ("OPEN TIME (UTC)", 19), ("EXCHANGE", 15), ("SYMBOL", 12), ("INT", 3), ("OPEN", 12),
    ("HIGH", 12), ("LOW", 12), ("CLOSE", 12), ("VOLUME", 14), ("CLOSED", 6),
)  # fmt: skip


def header() -> str:
    return "  ".join(
        name.ljust(width) if i < 4 else name.rjust(width) for i, (name, width) in enumerate(COLUMNS)
    ).rstrip()


def line(candle: dict[str, Any]) -> str:
    cells = [
        text.utc(candle.get("open_time")),
        str(candle.get("exchange")),
        str(candle.get("symbol")),
        str(candle.get("interval")),
        *(text.number(candle.get(k)) for k in ("open", "high", "low", "close", "volume")),
        text.yes_no(candle.get("closed")),
    ]
    return "  ".join(
        cell.ljust(width) if i < 4 else cell.rjust(width)
        for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    ).rstrip()
