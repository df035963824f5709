"""The publisher's event-loop side: committed batches from the writer into the backlog, the
publishing thread started and stopped, and its state as one value for /health and /metrics.

Taking a batch costs the event loop a lock and an append: a broker that is down or slow
costs ingest nothing (the backlog is bounded; forming updates are dropped first, counted).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import attrs
import trio

from feedd.candle import Candle
from feedd.config import NatsConfig
from feedd.publish.backlog import Backlog
from feedd.publish.connect import where
from feedd.publish.sender import Sender
from feedd.store.writer import Writer

log = logging.getLogger("feedd.publish")

#: closed candles held while the broker is away (~100 minutes of 1m candles of 1000 series)
BACKLOG_LIMIT = 100_000
#: committed batches the writer may hand over before the listener loses one
LISTENER_BUFFER = 10_000
#: at shutdown, how long the thread may take to publish what is held
DRAIN_S = 3.0


@attrs.frozen
class PublisherStats:
    url: str
    stream: str
    connected: bool
    #: candles waiting for the broker (closed, plus the newest forming update per series)
    backlog: int
    backlog_closed: int
    backlog_limit: int
    published: int
    published_closed: int
    dropped_forming: int
    #: closed candles given up because the backlog was full (the broker was away too long)
    dropped_closed: int
    last_error: str | None
    last_publish: float | None

    @property
    def healthy(self) -> bool:
        return self.connected and self.dropped_closed == 0


class Publisher:
    def __init__(
        self, settings: NatsConfig, writer: Writer, *, backlog_limit: int = BACKLOG_LIMIT
    ) -> None:
        self.settings = settings
        self._writer = writer
        self.backlog = Backlog(backlog_limit)
        self._sender = Sender(settings, self.backlog)
        self._said_full = False

    @property
    def stats(self) -> PublisherStats:
        state, backlog = self._sender.state, self.backlog
        return PublisherStats(
            url=where(self.settings),
            stream=self.settings.stream,
            connected=state.connected,
            backlog=len(backlog),
            backlog_closed=backlog.closed,
            backlog_limit=backlog.limit,
            published=state.published,
            published_closed=state.published_closed,
            dropped_forming=backlog.dropped_forming,
            dropped_closed=backlog.dropped_closed,
            last_error=state.last_error,
            last_publish=state.last_publish,
        )

    def offer(self, batch: Sequence[Candle]) -> None:
        """Queue a committed batch for the thread; never waits."""
        if self.backlog.add(batch) and not self._said_full:
            self._said_full = True
            log.error(
                "NATS backlog full (%d closed candles): dropping the oldest", self.backlog.limit
            )
        elif self._said_full and self.backlog.closed < self.backlog.limit // 2:
            self._said_full = False
        self._sender.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish committed batches until cancelled, then give the thread ``DRAIN_S`` to
        publish what is held."""
        thread = threading.Thread(target=self._sender.run, name="feedd-nats", daemon=True)
        with self._writer.open_commit_listener(LISTENER_BUFFER) as committed:
            thread.start()
            try:
                await trio.to_thread.run_sync(self._sender.wait_ready)
                log.info("publishing candles to NATS %s", where(self.settings))
                task_status.started()
                async for batch in committed:
                    self.offer(batch)
            finally:
                with trio.CancelScope(shield=True):
                    while True:
                        try:
                            self.offer(committed.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                            break
                    await self._stop(thread)

    async def _stop(self, thread: threading.Thread) -> None:
        self._sender.drain()
        with trio.move_on_after(DRAIN_S):
            await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        if thread.is_alive():
            self._sender.abort()
            await trio.to_thread.run_sync(thread.join, 2.0)
        held = self.backlog.closed
        if held:
            log.error("NATS: %d closed candles not published before shutdown", held)
