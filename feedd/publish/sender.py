"""The publishing thread: an asyncio loop that owns the NATS connection and empties the backlog.

Closed candles go out as JetStream publishes with a message id, pipelined in windows; a
window leaves the backlog once every ack is in. On any failure the connection is closed, the
thread backs off (capped, jittered; reset by an acknowledged publish, not by a mere connect)
and publishes again from the oldest unacknowledged candle: what the broker had already stored
is dropped as a duplicate, so each closed candle is stored once and in order per series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable
from typing import Any

import attrs
from nats.aio.client import Client
from nats.js import JetStreamContext

from feedd.config import NatsConfig
from feedd.publish.backlog import Backlog
from feedd.publish.connect import NATS_ERRORS, connect, ensure_stream, where
from feedd.publish.fastpath import Acks, Frames, send, take_acks

log = logging.getLogger("feedd.publish")

#: closed candles in flight before their acks are awaited
WINDOW = 1000
#: candles framed and written at a go (~1-2 ms of CPU), then the thread gives way
CHUNK = 200
GIVE_WAY_S = 0.0005
ACK_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 5
RETRY_INITIAL_S = 0.25
RETRY_MAX_S = 10.0


class BrokerLost(Exception):
    """The connection closed under a window (the broker stopped or cut us off)."""


@attrs.define(eq=False)
class SenderState:
    """Written by the thread, read by the event loop (single values: no lock needed)."""

    connected: bool = False
    published: int = 0
    published_closed: int = 0
    last_error: str | None = None
    #: when the last ack arrived (epoch seconds)
    last_publish: float | None = None
    #: the stream keeps forming updates for a minute only (server allows per-message TTL)
    forming_ttl: bool = False


class Sender:
    def __init__(self, settings: NatsConfig, backlog: Backlog) -> None:
        self.settings = settings
        self.backlog = backlog
        self.state = SenderState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        #: the thread waits for ``wake`` (set before it looks at the backlog a last time)
        self._idle = False
        self._draining = False
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._rng = random.Random()

    # -- called from the event loop's thread ---------------------------------------------

    def wake(self) -> None:
        # A busy thread looks at the backlog again by itself: waking it would cost the event
        # loop a write to the asyncio loop's socket per committed batch, for nothing.
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and self._idle:
            loop.call_soon_threadsafe(wake.set)

    def drain(self) -> None:
        """Publish what is queued, then end (the caller bounds the wait, then ``abort``s)."""
        self._draining = True
        self.wake()

    def abort(self) -> None:
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            # The thread may be ending on its own: its loop is closed, nothing left to stop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)

    def wait_ready(self) -> None:
        self._ready.wait()

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        """The thread's body."""
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._main = asyncio.current_task()
        self._ready.set()
        attempt = 0
        while True:
            nc: Client | None = None
            lost = asyncio.Event()
            try:
                nc = await connect(
                    self.settings, reconnect=False, name="feedd-publisher", lost=lost
                )
                js = nc.jetstream(timeout=ACK_TIMEOUT_S)
                self.state.forming_ttl = await ensure_stream(js, self.settings)
                self.state.connected = True
                if self.state.last_error is not None:
                    log.info("NATS %s reachable again", where(self.settings))
                attempt = await self._pump(nc, js, lost, attempt)
                return
            except (*NATS_ERRORS, BrokerLost) as exc:  # type: ignore[misc]
                self._failed(exc)
            except Exception as exc:
                # Not a broker failure (a client library bug, say): the thread must not die
                # silently while the backlog fills, so it is reported and retried the same way.
                # asyncio's CancelledError is a BaseException and still ends the thread.
                log.exception("NATS publisher failed unexpectedly")
                self._failed(exc)
            finally:
                self.state.connected = False
                if nc is not None:
                    await _close(nc)
            if self._draining and not self.backlog.closed:
                return
            ceiling = min(RETRY_MAX_S, RETRY_INITIAL_S * 2**attempt)
            attempt = min(attempt + 1, 30)
            await self._sleep(ceiling / 2 + self._rng.random() * ceiling / 2)

    async def _pump(
        self, nc: Client, js: JetStreamContext, lost: asyncio.Event, attempt: int
    ) -> int:
        """Publish until drained (returns) or the broker fails (raises)."""
        assert self._wake is not None
        frames = Frames(self.settings.subject_prefix)
        acks = Acks()
        reply = await take_acks(nc, acks)
        ttl = self.state.forming_ttl
        while True:
            window, forming = self.backlog.peek(WINDOW)
            if not window and not forming:
                if self._draining:
                    await nc.flush(timeout=FLUSH_TIMEOUT_S)
                    return attempt
                self._wake.clear()
                self._idle = True
                try:
                    # looked at after _idle is set: an offer or drain before it is seen here,
                    # one after it wakes the thread
                    if not len(self.backlog) and not self._draining:
                        await _first(self._wake.wait(), lost.wait())
                finally:
                    self._idle = False
                if lost.is_set():
                    raise BrokerLost("connection closed")
                continue
            if window:
                acks.expect(len(window))
                for at in range(0, len(window), CHUNK):
                    await send(nc, frames.closed(window[at : at + CHUNK], reply))
                    await _give_way()
            if forming:
                try:
                    # No ack wanted: a forming update is superseded within a second and may
                    # be lost; waiting for acks would double the round trips under load.
                    for at in range(0, len(forming), CHUNK):
                        await send(nc, frames.forming(forming[at : at + CHUNK], ttl=ttl))
                        await _give_way()
                except NATS_ERRORS:
                    self.backlog.drop_forming(len(forming))
                    raise
            if window:
                done = await _first(acks.all_in.wait(), lost.wait(), timeout=ACK_TIMEOUT_S)
                if acks.error is not None:
                    raise BrokerLost(f"JetStream refused a candle: {acks.error}")
                if done is None or not acks.all_in.is_set():
                    raise BrokerLost("connection closed" if lost.is_set() else "no ack in time")
            self.backlog.done(window)
            if not window:
                await nc.flush(timeout=FLUSH_TIMEOUT_S)
            self.state.published += len(window) + len(forming)
            self.state.published_closed += len(window)
            self.state.last_publish = time.time()
            attempt = 0

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.state.last_error != text or self.state.connected:
            log.warning(
                "NATS %s: %s; %d closed candles held",
                where(self.settings),
                text,
                self.backlog.closed,
            )
        self.state.last_error = text

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        deadline = time.monotonic() + seconds
        # Woken early only to leave when draining with nothing to publish.
        while (left := deadline - time.monotonic()) > 0:
            self._wake.clear()
            self._idle = True
            try:
                if self._draining and not self.backlog.closed:
                    return
                await _first(self._wake.wait(), timeout=left)
            finally:
                self._idle = False


async def _give_way() -> None:
    """Block in the loop's poll for a moment: the GIL goes to the event loop's thread if it
    waits for it. Without a real wait the GIL is dropped and taken straight back, and the
    waiting thread gets it only when the interpreter forces a switch (5 ms)."""
    await asyncio.sleep(GIVE_WAY_S)


async def _first(*aws: Awaitable[Any], timeout: float | None = None) -> object:  # noqa: ASYNC109
    """Wait for the first of ``aws`` (coroutines or futures); returns the one that finished
    (None on timeout) and cancels the coroutines that did not."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, given in zip(tasks, aws, strict=True):
            if task is not given and not task.done():
                task.cancel()
    return next((given for task, given in zip(tasks, aws, strict=True) if task in done), None)


async def _close(nc: Client) -> None:
    with contextlib.suppress(*NATS_ERRORS):
        await asyncio.wait_for(nc.close(), timeout=2)
