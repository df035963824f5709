"""``feedctl tail``: follow committed candles over feedd's ``/ws`` until Ctrl-C or ``--count``.

Runs its own ``trio.run``; the token goes in the handshake's Authorization header.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio
import trio_websocket

from feedd import errors
from feedd.ctl import text
from feedd.ctl.client import Refused, Unreachable, refusal
from feedd.engine.ws import open_websocket
from feedd.errors import TransportError

#: close codes that mean the server went away rather than refused us
GONE = {1001, 1006}
#: committed batches can be large
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
    if args.nats:
        from feedd.ctl import tail_nats  # nats-py only when asked for

        tail_nats.run(args, Printer(args))
        return
    if args.since is not None or args.subject:
        raise Refused("--since and --subject read NATS: give --nats URL")
    try:
        trio.run(follow, args)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Ctrl-C is how tail is meant to end: exit status 0. trio may deliver it inside the
        # library's reader task, so it can arrive grouped with the lost connection it caused.
        if any(isinstance(e, KeyboardInterrupt) for e in errors.leaves(exc)):
            return
        # Errors of the body and of the reader task at once: main prints the one that
        # explains it (feedctl's own), never the group's traceback.
        cause = errors.collapse(exc)
        raise cause from cause.__cause__


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
    """feedd's ``/ws``; failing to open it is Unreachable (exit 3), or Refused when refused."""
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    try:
        async with open_websocket(
            ws_url(base_url),
            extra_headers=headers,
            connect_timeout=connect_s,
            max_message_size=MAX_MESSAGE_SIZE,
        ) as ws:
            yield ws
    # Only opening raises these: the body (follow) raises feedctl's own errors.
    except TransportError as exc:
        rejected = exc.__cause__
        if isinstance(rejected, trio_websocket.ConnectionRejected):
            raise refusal(rejected.status_code, rejected.body or b"") from None
        raise unreachable(base_url, exc) from None


def unreachable(base_url: str, exc: TransportError) -> Unreachable:
    """Name the step that failed, from the error underneath ``open_websocket``'s."""
    cause = exc.__cause__
    if isinstance(cause, trio_websocket.ConnectionTimeout):
        return Unreachable(f"no WebSocket handshake from {base_url} (timed out)")
    if isinstance(cause, trio.TooSlowError):
        return Unreachable(f"cannot reach {base_url}: timed out")
    if isinstance(cause, OSError):
        return Unreachable(f"cannot reach {base_url}: {os_reason(cause)}")
    return Unreachable(f"cannot reach {base_url}: {cause or exc}")


class Printer:
    """Prints candles as tail shows them; ``done`` once --count are printed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.printed = 0
        # The header waits for the first candle, so that a refusal leaves stdout empty.
        self.need_header = not args.json

    @property
    def done(self) -> bool:
        return self.args.count is not None and self.printed >= self.args.count

    def show(self, candle: dict[str, Any]) -> None:
        if (self.args.closed and not candle.get("closed")) or self.done:
            return
        if self.need_header:
            print(header())
            self.need_header = False
        print(orjson.dumps(candle).decode() if self.args.json else line(candle))
        self.printed += 1


async def follow(args: argparse.Namespace) -> None:
    printer = Printer(args)
    async with open_feed(args.url, args.token, args.timeout) as ws:
        await ws.send_message(orjson.dumps(subscription(args)).decode())
        while not printer.done:
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
                printer.show(candle)
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
