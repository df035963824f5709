"""The publishing thread's hot path past nats-py's per-message work: a window of candles
framed as NATS protocol bytes in one piece, and JetStream's acks counted straight off the parser.

nats-py's publish validates, builds headers and queues each message on its own, and every
reply becomes a Msg queued to a task that calls back (~50 us of CPU a candle, under the GIL
the event loop needs). Both hooks below use nats-py's writer and parser as they are.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

import nats.errors
from nats.aio.client import Client

from feedd.candle import Candle
from feedd.candlejson import encode_candle
from feedd.publish import wire

SeriesKey = tuple[str, str, str]
_HDR = b"NATS/1.0\r\n"
_BLANK = re.compile(rb"\s")


class Frames:
    """HPUB/PUB commands for candles; subjects and message-id prefixes made once per series."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._series: dict[SeriesKey, tuple[bytes, bytes]] = {}

    def _of(self, candle: Candle) -> tuple[bytes, bytes]:
        key = (candle.exchange, candle.symbol, candle.interval)
        found = self._series.get(key)
        if found is None:
            subject = wire.subject(self.prefix, candle).encode()
            # nats-py's own check: a blank in a subject would shift the protocol's arguments
            if _BLANK.search(subject):
                raise nats.errors.BadSubjectError
            ident = f"{wire.MSG_ID}: {candle.exchange}.{candle.symbol}.{candle.interval}."
            found = self._series[key] = (subject, ident.encode())
        return found

    def closed(self, candles: Iterable[Candle], reply: bytes) -> bytes:
        """JetStream publishes with a message id, their acks sent to ``reply``."""
        encode, parts = encode_candle, []
        for candle in candles:
            subject, ident = self._of(candle)
            head = b"%s%s%d\r\n\r\n" % (_HDR, ident, candle.open_time)
            body = encode(candle)
            parts.append(
                b"HPUB %s %s %d %d\r\n%s%s\r\n"
                % (subject, reply, len(head), len(head) + len(body), head, body)
            )
        return b"".join(parts)

    def forming(self, candles: Iterable[Candle], *, ttl: bool) -> bytes:
        """Plain publishes (no ack wanted), with the stream's short time to live if it has one."""
        encode, parts = encode_candle, []
        head = b"%s%s: %s\r\n\r\n" % (_HDR, wire.TTL.encode(), wire.FORMING_TTL.encode())
        for candle in candles:
            subject, _ = self._of(candle)
            body = encode(candle)
            if ttl:
                parts.append(
                    b"HPUB %s %d %d\r\n%s%s\r\n"
                    % (subject, len(head), len(head) + len(body), head, body)
                )
            else:
                parts.append(b"PUB %s %d\r\n%s\r\n" % (subject, len(body), body))
        return b"".join(parts)


async def send(nc: Client, frames: bytes) -> None:
    """Queue protocol bytes on the connection and wake its flusher (what publish does)."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    await nc._send_command(frames)
    await nc._flush_pending()


class Acks:
    """JetStream's acks of the window in flight, counted on one reply subject.

    A window only needs to know that every candle was stored (or stored before: a duplicate
    ack) and that none was refused, so a reply is looked at for ``"error"`` and counted."""

    def __init__(self) -> None:
        self.expected = 0
        self.received = 0
        self.error: str | None = None
        self.all_in = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected, self.received, self.error = count, 0, None
        self.all_in.clear()

    def on_reply(self, data: bytes, headers: bytes | None) -> None:
        # A PubAck is {"stream":..,"seq":..}; a refusal carries "error"; no stream on the
        # subject is an empty 503 status message.
        if not data or b'"error"' in data:
            status = (headers or b"").decode(errors="replace").strip()
            self.error = data.decode(errors="replace") or f"no stream ({status})"
            self.all_in.set()
            return
        self.received += 1
        if self.received >= self.expected:
            self.all_in.set()


async def take_acks(nc: Client, acks: Acks) -> bytes:
    """Subscribe to a fresh inbox whose messages go to ``acks`` from the protocol parser,
    before nats-py makes them Msg objects; returns the inbox (the reply subject)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    sid, process_msg = sub._id, nc._process_msg

    async def process(
        msg_sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:
        if msg_sid == sid:
            acks.on_reply(data, headers)
        else:
            await process_msg(msg_sid, subject, reply, data, headers)

    # The parser calls nc._process_msg for every MSG/HMSG: an instance attribute wins.
    setattr(nc, "_process_msg", process)  # noqa: B010
    return inbox.encode()
