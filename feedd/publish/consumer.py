"""Reading candles back from the stream: an asyncio consumer for any program, and the trio
bridge that feeds an API node's live hub (its /ws) from candles another process ingested.

The consumer is ordered and ephemeral: the server delivers the stream's messages in order
(new ones only, or from a start time), and the client recreates it after a gap or reconnect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio
from nats.js.api import ConsumerConfig, DeliverPolicy

from feedd.candle import Candle
from feedd.config import NatsConfig
from feedd.publish import wire
from feedd.publish.connect import NATS_ERRORS, connect, ensure_stream, where
from feedd.web.live import LiveHub

log = logging.getLogger("feedd.publish")

#: what the callback receives: the subject and the candle's JSON object (as /ws sends it)
OnCandle = Callable[[str, dict[str, Any]], Awaitable[None] | None]
#: candles waiting for the event loop before the oldest are dropped (a live view only)
HUB_BUFFER = 100_000
SUBSCRIBE_WAIT_S = 10.0


def start_config(since_ms: int | None) -> ConsumerConfig:
    if since_ms is None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    start = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC)
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)


async def consume(
    settings: NatsConfig,
    on_candle: OnCandle,
    *,
    subject: str | None = None,
    since_ms: int | None = None,
    subscribed: Callable[[], None] | None = None,
) -> None:
    """Hand every candle published on ``subject`` (default: all of the stream) to
    ``on_candle`` until cancelled: those stored since ``since_ms`` first (a replay), then
    live ones as they arrive. asyncio; ``subscribed`` is called once the consumer exists."""
    nc = await connect(settings, reconnect=True, name="feedd-consumer")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            subject or wire.stream_subjects(settings.subject_prefix),
            stream=settings.stream,
            ordered_consumer=True,
            config=start_config(since_ms),
        )
        if subscribed is not None:
            subscribed()
        async for msg in sub.messages:
            try:
                doc = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                result = on_candle(msg.subject, doc)
                if result is not None:
                    await result
    finally:
        await nc.close()


async def feed_live_hub(
    hub: LiveHub,
    settings: NatsConfig,
    *,
    since_ms: int | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed ``hub`` (an API node's /ws) with the candles on the stream until cancelled.

    The consumer runs in an owned thread's asyncio loop; candles cross to the event loop in
    lists, one hop per burst rather than one per candle, and the hub's publish never waits."""
    token = trio.lowlevel.current_trio_token()
    lock = threading.Lock()
    pending: list[Candle] = []
    scheduled = False
    subscribed = trio.Event()
    failed: list[BaseException] = []
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []

    def deliver() -> None:
        nonlocal scheduled
        with lock:
            batch, pending[:], scheduled = list(pending), [], False
        hub.publish(batch)

    def on_candle(_subject: str, doc: dict[str, Any]) -> None:
        nonlocal scheduled
        try:
            candle = wire.candle_from_dict(doc)
        except (KeyError, TypeError, ValueError):
            return
        with lock:
            pending.append(candle)
            if len(pending) > HUB_BUFFER:
                del pending[: len(pending) - HUB_BUFFER]
            if scheduled:
                return
            scheduled = True
        token.run_sync_soon(deliver)

    def ready() -> None:
        token.run_sync_soon(subscribed.set)

    async def main() -> None:
        loop_box.append((asyncio.get_running_loop(), asyncio.current_task()))  # type: ignore[arg-type]
        while True:
            try:
                # The same stream the collectors make: an API node may start before them.
                nc = await connect(settings, reconnect=False, name="feedd-consumer")
                try:
                    await ensure_stream(nc.jetstream(), settings)
                finally:
                    await nc.close()
                await consume(settings, on_candle, since_ms=since_ms, subscribed=ready)
            except NATS_ERRORS as exc:
                log.warning("NATS %s: consumer failed (%s); again in 1 s", where(settings), exc)
                await asyncio.sleep(1.0)

    def run() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported on the event loop, not lost in the thread
            failed.append(exc)
            token.run_sync_soon(subscribed.set)

    thread = threading.Thread(target=run, name="feedd-nats-consumer", daemon=True)
    thread.start()
    try:
        # Started once subscribed (nothing published after that is missed), or anyway after
        # a while: an API node serves its HTTP API while the broker is away.
        with trio.move_on_after(SUBSCRIBE_WAIT_S):
            await subscribed.wait()
        if failed:
            raise failed[0]
        log.info("feeding /ws from NATS %s", where(settings))
        task_status.started()
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            if loop_box:
                loop, task = loop_box[0]
                loop.call_soon_threadsafe(task.cancel)
            await trio.to_thread.run_sync(thread.join, 5.0)
