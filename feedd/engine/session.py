"""One WebSocket session of a shard: connect, subscribe, heartbeat, read, parse, watch.

The session reports readiness (every subscribe request answered) through ``task_status``;
after that it never raises: it records why it ended and sets ``attention`` so the shard can
reconnect, or rotate to a new session before cancelling this one (make-before-break).
Which streams are subscribed (subscriptions.py) and which candles were missed (gaps.py) are
decided without I/O; this module sends, reads, times and reports.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import trio

from feedd.candle import Candle
from feedd.engine import connector_tws
from feedd.engine.connector import Connection
from feedd.engine.connector_tws import message_queue as message_queue  # pinned by a test
from feedd.engine.context import ExchangeContext, stream_key
from feedd.engine.gaps import Gaps, HealRequest
from feedd.engine.pacing import Pacer
from feedd.engine.stats import StreamState
from feedd.engine.subscriptions import Subscriptions
from feedd.errors import ParseError, TransportError, collapse
from feedd.exchanges.contract import (
    ErrorEvent,
    Event,
    Ignored,
    Notice,
    Pong,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
    SubscribeRequest,
)

ACK_TIMEOUT_S = 15.0
#: share of the venue's client-message budget we allow ourselves
MESSAGE_BUDGET_SHARE = 0.5
#: rotate this long before the venue's forced disconnect
ROTATE_MARGIN = 0.1
#: most frames taken off trio-websocket's queue before handing candles on
MAX_BURST = connector_tws.MAX_BATCH


class StreamsSilent(TransportError):
    def __init__(self, streams: list[Stream]) -> None:
        super().__init__(f"{len(streams)} stream(s) silent: " + ", ".join(map(stream_key, streams)))
        self.streams = streams


class Session:
    def __init__(
        self, ctx: ExchangeContext, streams: tuple[Stream, ...], exempt: frozenset[Stream]
    ) -> None:
        self.ctx = ctx
        self.streams = streams
        #: streams that stayed silent across reconnects: watched no more until they speak
        self.exempt = exempt
        self.attention = trio.Event()
        self.rotate_requested = False
        self.error: BaseException | None = None
        self.subscribed_at: float | None = None
        self.ended_at: float | None = None
        self._cancel = trio.CancelScope()
        self._subscriptions = Subscriptions(ctx.module.subscribe_requests)
        self._gaps = Gaps()
        self._ws: Connection | None = None
        self._pacer = Pacer(ctx.module.LIMITS.client_msgs_per_second * MESSAGE_BUDGET_SHARE)
        hourly = ctx.module.LIMITS.subscribe_requests_per_hour
        self._subscribe_budget = Pacer(hourly / 3600, burst=hourly) if hourly else None
        self._all_answered = trio.Event()
        self._last_message = trio.current_time()
        self._connected_at = trio.current_time()
        self._parse_errors_logged_at = -1e9

    def cancel(self) -> None:
        self._cancel.cancel()

    def last_open_times(self) -> dict[Stream, int]:
        """The open time of the newest candle seen on each stream that spoke."""
        return self._gaps.last_open_times()

    @property
    def spoke(self) -> frozenset[Stream]:
        """The streams that sent a candle on this session."""
        return frozenset(self._gaps.spoke())

    @property
    def alive(self) -> bool:
        return self.ended_at is None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            with self._cancel:
                await self.ctx.connect_pacer.acquire()
                async with self.ctx.connect(self.ctx.module.ws_url(self.ctx.ws_base)) as ws:
                    self._ws = ws
                    # The venue's lifetime clock starts at connect, not at subscribed.
                    self._connected_at = trio.current_time()
                    self.ctx.stats.connections += 1
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._read_loop)
                            await self._subscribe(self.streams)
                            self._settle()
                            with trio.move_on_after(ACK_TIMEOUT_S):
                                await self._all_answered.wait()
                            if not self._all_answered.is_set():
                                raise TransportError("subscription not answered in time")
                            self.subscribed_at = trio.current_time()
                            started = True
                            task_status.started()
                            nursery.start_soon(self._heartbeat)
                            nursery.start_soon(self._watchdog)
                            self._schedule_rotation(nursery)
                    finally:
                        self.ctx.stats.connections -= 1
                        self._forget_subscriptions()
        except (TransportError, trio.BrokenResourceError) as exc:
            self._fail(exc, started)
        except BaseExceptionGroup as group:
            # Errors of our child tasks arrive grouped; cancellation and bugs propagate.
            ours, rest = group.split(_SESSION_ERRORS)
            if rest is not None:
                raise rest from None
            self._fail(collapse(ours) if ours else TransportError("ended"), started)
        finally:
            self.ended_at = trio.current_time()
            self.attention.set()
        if not started and self.error is not None:
            raise self.error

    def _fail(self, exc: BaseException, started: bool) -> None:
        self.error = exc
        if started:
            self.ctx.log.warning("%s connection lost: %s", self.ctx.module.NAME, exc)

    # ------------------------------------------------------------------ subscribing

    async def _subscribe(self, streams: tuple[Stream, ...]) -> None:
        await self._send_requests(self._subscriptions.subscribe(streams, trio.current_time()))

    async def _send_requests(self, requests: Sequence[SubscribeRequest]) -> None:
        for request in requests:
            if self._subscribe_budget is not None:
                await self._subscribe_budget.acquire()
            await self._send(request.frame)

    async def _send(self, frame: str) -> None:
        assert self._ws is not None
        await self._pacer.acquire()
        await self._ws.send(frame)

    def _settle(self) -> None:
        if self._subscriptions.all_answered:
            self._all_answered.set()

    def _on_ack(self, event: SubscribeAck) -> None:
        self._on_subscribed(self._subscriptions.on_ack(event, trio.current_time()))
        self._settle()

    def _on_subscribed(self, streams: list[Stream]) -> None:
        for stream in streams:
            self.ctx.stats.streams_subscribed += 1
            if stream in self.exempt:
                self.ctx.stats.set_stream(stream_key(stream), StreamState.SILENT)
            else:
                self.ctx.stats.set_stream(stream_key(stream), StreamState.PENDING)

    async def _on_rejected(self, event: SubscribeRejected) -> None:
        rejection = self._subscriptions.on_rejected(event, trio.current_time())
        for stream in rejection.bad:
            self.ctx.stats.set_stream(
                stream_key(stream), StreamState.REJECTED, f"{event.code} {event.message}"
            )
            self.ctx.log.warning(
                "%s rejected %s: %s %s",
                self.ctx.module.NAME,
                stream_key(stream),
                event.code,
                event.message,
            )
        await self._send_requests(rejection.retry)
        self._settle()

    def _forget_subscriptions(self) -> None:
        self.ctx.stats.streams_subscribed -= self._subscriptions.subscribed_count

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        assert self._ws is not None
        ws, ctx, stats = self._ws, self.ctx, self.ctx.stats
        parse, on_candle = ctx.module.parse_frame, self._on_candle
        send_nowait = ctx.candles_send.send_nowait
        # Every message already received is parsed in this step and its candles go on in one
        # list: one wake-up and one channel send per burst, not per frame.
        while True:
            messages = await ws.receive_batch()
            now = trio.current_time()
            self._last_message = now
            stats.last_message_at = now
            stats.messages += len(messages)
            candles: list[Candle] = []
            for message in messages:
                try:
                    text = message if isinstance(message, str) else message.decode()
                    events = parse(text)
                except (ParseError, UnicodeDecodeError) as exc:
                    self._parse_error(exc, message)
                    continue
                # Nearly every frame is one candle: taken here, without a coroutine per frame.
                if len(events) == 1 and type(event := events[0]) is Candle:
                    if on_candle(event, now):
                        candles.append(event)
                else:
                    await self._handle(events, now, candles)
            if candles:
                stats.candles += len(candles)
                # send() would yield once more per burst (a task step of its own, about one
                # per frame at 2,000/s); receive_batch() yields at every socket read anyway.
                # A full channel still makes ingest wait for the writer.
                try:
                    send_nowait(candles)
                except trio.WouldBlock:
                    await ctx.candles_send.send(candles)

    async def _handle(self, events: list[Event], now: float, candles: list[Candle]) -> None:
        ctx, module, stats = self.ctx, self.ctx.module, self.ctx.stats
        for event in events:
            if isinstance(event, Candle):
                if self._on_candle(event, now):
                    candles.append(event)
            elif isinstance(event, SubscribeAck):
                self._on_ack(event)
            elif isinstance(event, SubscribeRejected):
                await self._on_rejected(event)
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, Ignored):
                stats.ignored_frames += 1
            elif isinstance(event, ServerPing):
                await self._send(event.reply)
            elif isinstance(event, Notice):
                ctx.log.warning("%s notice %s: %s", module.NAME, event.code, event.message)
                if event.reconnect:
                    self._request_rotation()
            elif isinstance(event, ErrorEvent):
                stats.exchange_errors += 1
                stats.last_error = f"{event.code} {event.message}"
                ctx.log.warning("%s error %s: %s", module.NAME, event.code, event.message)

    def _on_candle(self, candle: Candle, now: float) -> bool:
        stream = self._subscriptions.heard(candle.symbol, candle.interval, now)
        if stream is None:
            return False
        heal = self._gaps.observe(candle)
        if heal is not None:
            if heal.first_candle:
                # Data proves the subscription, whether or not its ack came.
                self._on_subscribed(self._subscriptions.confirm([stream], now))
                self.ctx.stats.set_stream(stream_key(stream), StreamState.LIVE)
            self._heal(heal)
        return True

    def _heal(self, heal: HealRequest) -> None:
        try:
            self.ctx.heal_send.send_nowait(heal)
        except trio.WouldBlock:
            # The backfill queue is full; the next session's first-frame heal will cover it.
            self.ctx.log.warning(
                "%s heal queue full, %s deferred", self.ctx.module.NAME, stream_key(heal.stream)
            )

    def _parse_error(self, exc: Exception, message: str | bytes) -> None:
        self.ctx.stats.parse_errors += 1
        now = time.monotonic()
        # Garbage can arrive in floods; one log line per 10 s per session is enough.
        if now - self._parse_errors_logged_at >= 10:
            self._parse_errors_logged_at = now
            self.ctx.log.warning(
                "%s malformed frame (%d so far): %s; frame starts %r",
                self.ctx.module.NAME,
                self.ctx.stats.parse_errors,
                exc,
                message[:80],
            )

    # ------------------------------------------------------------------ timers

    async def _heartbeat(self) -> None:
        interval = self.ctx.module.PING_INTERVAL_S
        if interval is None:
            return
        seq = 0
        while True:
            await trio.sleep(interval)
            seq += 1
            frame = self.ctx.module.ping_frame(seq)
            if frame is not None:
                await self._send(frame)

    async def _watchdog(self) -> None:
        ctx = self.ctx
        period = min(ctx.silence_timeout, ctx.stream_silence_timeout) / 4
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            if now - self._last_message > ctx.silence_timeout:
                raise TransportError(f"no frame for {ctx.silence_timeout:g} s")
            silent = self._subscriptions.silent(now, ctx.stream_silence_timeout, self.exempt)
            if silent:
                for stream in silent:
                    ctx.stats.set_stream(stream_key(stream), StreamState.SILENT)
                raise StreamsSilent(silent)

    def _schedule_rotation(self, nursery: trio.Nursery) -> None:
        lifetime = self.ctx.lifetime
        if lifetime is None:
            return

        async def rotate_later() -> None:
            await trio.sleep_until(self._connected_at + lifetime * (1 - ROTATE_MARGIN))
            self._request_rotation()

        nursery.start_soon(rotate_later)

    def _request_rotation(self) -> None:
        self.rotate_requested = True
        self.attention.set()


_SESSION_ERRORS = (TransportError, trio.BrokenResourceError)
