"""One WebSocket session of a shard: connect, subscribe, heartbeat, read, parse, watch.

The session reports readiness (every subscribe request answered) through ``task_status``;
after that it never raises: it records why it ended and sets ``attention`` so the shard can
reconnect, or rotate to a new session before cancelling this one (make-before-break).
"""

from __future__ import annotations

import time

import attrs
import trio
import trio_websocket

from feedd.candle import Candle
from feedd.engine.context import ExchangeContext, HealRequest, stream_key
from feedd.engine.pacing import Pacer
from feedd.engine.stats import StreamState
from feedd.errors import ParseError, TransportError, collapse
from feedd.exchanges.contract import (
    ErrorEvent,
    Ignored,
    Notice,
    Pong,
    ServerPing,
    Stream,
    SubscribeAck,
    SubscribeRejected,
    SubscribeRequest,
)
from feedd.intervals import next_open

ACK_TIMEOUT_S = 15.0
#: share of the venue's client-message budget we allow ourselves
MESSAGE_BUDGET_SHARE = 0.5
#: rotate this long before the venue's forced disconnect
ROTATE_MARGIN = 0.1
#: most frames taken off the socket queue before handing candles on
MAX_BURST = 256


class StreamsSilent(TransportError):
    def __init__(self, streams: list[Stream]) -> None:
        super().__init__(f"{len(streams)} stream(s) silent: " + ", ".join(map(stream_key, streams)))
        self.streams = streams


@attrs.define(eq=False)
class _Tracked:
    stream: Stream
    last_seen: float
    subscribed: bool = False
    rejected: bool = False
    open_time: int | None = None
    closed: bool = True


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
        self.spoke: set[Stream] = set()
        self._cancel = trio.CancelScope()
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._pending: dict[str, SubscribeRequest] = {}
        self._request_seq = 1
        self._ws: trio_websocket.WebSocketConnection | None = None
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
        return {t.stream: t.open_time for t in self._tracked.values() if t.open_time is not None}

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
        except (TransportError, trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
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
        if isinstance(exc, trio_websocket.ConnectionClosed):
            exc = TransportError(f"connection closed by the exchange: {exc.reason}")
        self.error = exc
        if started:
            self.ctx.log.warning("%s connection lost: %s", self.ctx.module.NAME, exc)

    # ------------------------------------------------------------------ subscribing

    async def _subscribe(self, streams: tuple[Stream, ...] | list[Stream]) -> None:
        now = trio.current_time()
        for stream in streams:
            self._tracked.setdefault((stream.symbol, stream.interval), _Tracked(stream, now))
        requests = self.ctx.module.subscribe_requests(list(streams), self._request_seq)
        self._request_seq += len(requests)
        for request in requests:
            self._pending[request.request_id] = request
        for request in requests:
            if self._subscribe_budget is not None:
                await self._subscribe_budget.acquire()
            await self._send(request.frame)

    async def _send(self, frame: str) -> None:
        assert self._ws is not None
        await self._pacer.acquire()
        await self._ws.send_message(frame)

    def _answered(self, request_id: str | None) -> SubscribeRequest | None:
        request = self._pending.pop(request_id, None) if request_id is not None else None
        if request is None and request_id is None and len(self._pending) == 1:
            # An error without an id (e.g. unparseable request) belongs to the only open one.
            request = self._pending.popitem()[1]
        return request

    def _settle(self) -> None:
        if not self._pending:
            self._all_answered.set()

    def _on_ack(self, event: SubscribeAck) -> None:
        request = self._pending.get(event.request_id) if event.request_id else None
        if event.stream is not None:
            self._mark_subscribed([event.stream])
            if request is not None and all(
                self._tracked[(s.symbol, s.interval)].subscribed for s in request.streams
            ):
                self._answered(event.request_id)
            self._settle()
            return
        request = self._answered(event.request_id)
        if request is not None:
            self._mark_subscribed(request.streams)
        self._settle()

    def _mark_subscribed(self, streams: tuple[Stream, ...] | list[Stream]) -> None:
        for stream in streams:
            tracked = self._tracked.get((stream.symbol, stream.interval))
            if tracked is not None and not tracked.subscribed:
                tracked.subscribed = True
                tracked.last_seen = trio.current_time()
                self.ctx.stats.streams_subscribed += 1
                if stream in self.exempt:
                    self.ctx.stats.set_stream(stream_key(stream), StreamState.SILENT)
                else:
                    self.ctx.stats.set_stream(stream_key(stream), StreamState.PENDING)

    async def _on_rejected(self, event: SubscribeRejected) -> None:
        request = self._answered(event.request_id)
        named = set(event.streams)
        if request is None:
            bad = named
            retry: list[Stream] = []
        else:
            bad = named & set(request.streams) if named else set()
            if not named and len(request.streams) == 1:
                bad = set(request.streams)
            retry = [
                s
                for s in request.streams
                if s not in bad and not self._tracked[(s.symbol, s.interval)].subscribed
            ]
        for stream in bad:
            tracked = self._tracked.get((stream.symbol, stream.interval))
            if tracked is not None:
                tracked.rejected = True
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
        if retry:
            # The venue may have failed the whole request for one bad stream: ask again, one
            # stream per request when we do not know which one it was.
            if named:
                await self._subscribe(retry)
            else:
                for stream in retry:
                    await self._subscribe([stream])
        self._settle()

    def _forget_subscriptions(self) -> None:
        self.ctx.stats.streams_subscribed -= sum(1 for t in self._tracked.values() if t.subscribed)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        assert self._ws is not None
        ws, ctx, stats = self._ws, self.ctx, self.ctx.stats
        # trio-websocket hands out one message per await, each costing a trip through the
        # scheduler; taking what is already queued in one go (and one channel send per
        # burst) roughly halves the per-frame overhead under load.
        queued: trio.MemoryReceiveChannel[str | bytes] | None = getattr(ws, "_recv_channel", None)
        while True:
            messages = [await ws.get_message()]
            if queued is not None:
                while len(messages) < MAX_BURST:
                    try:
                        messages.append(queued.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break  # an ended connection is reported by the next get_message()
            now = trio.current_time()
            self._last_message = now
            stats.last_message_at = now
            stats.messages += len(messages)
            candles: list[Candle] = []
            for message in messages:
                await self._handle(message, now, candles)
            if candles:
                stats.candles += len(candles)
                await ctx.candles_send.send(candles)

    async def _handle(self, message: str | bytes, now: float, candles: list[Candle]) -> None:
        ctx, module, stats = self.ctx, self.ctx.module, self.ctx.stats
        try:
            text = message if isinstance(message, str) else message.decode()
            events = module.parse_frame(text)
        except (ParseError, UnicodeDecodeError) as exc:
            self._parse_error(exc, message)
            return
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
        tracked = self._tracked.get((candle.symbol, candle.interval))
        if tracked is None or tracked.rejected:
            return False
        if not tracked.subscribed:
            self._mark_subscribed([tracked.stream])  # data proves the subscription
        if tracked.stream not in self.spoke:
            self.spoke.add(tracked.stream)
            self.ctx.stats.set_stream(stream_key(tracked.stream), StreamState.LIVE)
            # Whatever closed between the last candle stored and this one (a drop, a stall
            # across the reconnect, the bootstrap's end) was seen by no session: heal from
            # the stored tail below this candle, as this session may store newer ones first.
            self._heal(tracked.stream, None, seen_ms=candle.open_time)
        tracked.last_seen = now
        previous = tracked.open_time
        if previous is not None and candle.open_time > previous:
            # A newer candle while the previous one never closed on the stream (or whole
            # candles skipped): the closed values must come from REST.
            if not tracked.closed:
                self._heal(tracked.stream, previous)
            elif candle.open_time > next_open(candle.interval, previous):
                self._heal(tracked.stream, next_open(candle.interval, previous))
        if previous is None or candle.open_time >= previous:
            if candle.open_time != previous or not tracked.closed:
                tracked.closed = candle.closed
            tracked.open_time = candle.open_time
        return True

    def _heal(self, stream: Stream, since_ms: int | None, *, seen_ms: int | None = None) -> None:
        try:
            self.ctx.heal_send.send_nowait(HealRequest(stream, since_ms, seen_ms))
        except trio.WouldBlock:
            # The backfill queue is full; the next session's first-frame heal will cover it.
            self.ctx.log.warning(
                "%s heal queue full, %s deferred", self.ctx.module.NAME, stream_key(stream)
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
            silent = [
                t.stream
                for t in self._tracked.values()
                if t.subscribed
                and not t.rejected
                and t.stream not in self.exempt
                and now - t.last_seen > ctx.stream_silence_timeout
            ]
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


_SESSION_ERRORS = (TransportError, trio_websocket.ConnectionClosed, trio.BrokenResourceError)
