"""History over REST: bootstrap recent candles at start and heal gaps on request.

Work is a queue of streams with the oldest open time still wanted; requests for one stream
merge. Each round first asks the exchange for its clock, so whether a REST row is closed is
decided by exchange time (never the local clock), and every heal queued before the round
sees a clock later than the candles it wants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from feedd.engine.context import ExchangeContext, HealRequest, stream_key
from feedd.engine.rest import RestClient
from feedd.engine.stats import StreamState
from feedd.errors import ExchangeError, FeeddError
from feedd.exchanges.contract import Stream
from feedd.intervals import INTERVAL_MS, floor_open, next_open

#: (exchange name, stream) -> open time of the newest stored closed candle
LastClosed = Callable[[str, Stream], Awaitable[int | None]]
#: candles per writer hand-off
CHUNK = 1000


class Backfill:
    def __init__(
        self,
        ctx: ExchangeContext,
        rest: RestClient,
        last_closed: LastClosed,
        bootstrap_load: int,
    ) -> None:
        self.ctx = ctx
        self.rest = rest
        self.last_closed = last_closed
        self.bootstrap_load = bootstrap_load
        #: stream -> oldest open time wanted (None: from the last stored closed candle)
        self._pending: dict[Stream, int | None] = {}
        self._wake = trio.Event()

    def request(self, heal: HealRequest) -> None:
        if heal.stream in self._pending:
            known = self._pending[heal.stream]
            if heal.since_ms is not None and (known is None or heal.since_ms < known):
                # Keep the specific hole: the stored tail may already be past it.
                self._pending[heal.stream] = heal.since_ms
        else:
            self._pending[heal.stream] = heal.since_ms
        self.ctx.stats.backfill_pending = len(self._pending)
        self._wake.set()

    async def run(
        self,
        streams: tuple[Stream, ...],
        heal_recv: trio.MemoryReceiveChannel[HealRequest],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        for stream in streams:
            self.request(HealRequest(stream, None))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive, heal_recv)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._round()

    async def _receive(self, heal_recv: trio.MemoryReceiveChannel[HealRequest]) -> None:
        async with heal_recv:
            async for heal in heal_recv:
                self.request(heal)

    async def _round(self) -> None:
        module = self.ctx.module
        try:
            server_now = await self.rest.call(module.time_request(), module.parse_time)
        except FeeddError as exc:
            self.ctx.log.warning("%s server time unavailable: %s", module.NAME, exc)
            await trio.sleep(5)
            self._wake.set()
            return
        batch, self._pending = self._pending, {}
        for stream, since in batch.items():
            try:
                await self._heal(stream, since, server_now)
            except ExchangeError as exc:
                self.ctx.log.warning(
                    "%s backfill of %s refused: %s", module.NAME, stream_key(stream), exc
                )
                self.ctx.stats.set_stream(stream_key(stream), StreamState.REJECTED, str(exc))
            except FeeddError as exc:
                self.ctx.log.warning(
                    "%s backfill of %s failed, will retry: %s", module.NAME, stream_key(stream),
                    exc,
                )
                self.request(HealRequest(stream, since))
            self.ctx.stats.backfill_pending = len(self._pending) + len(batch)
        self.ctx.stats.backfill_pending = len(self._pending)

    async def _heal(self, stream: Stream, since: int | None, server_now: int) -> None:
        module, ctx = self.ctx.module, self.ctx
        # The newest candle that has closed by the exchange's clock.
        end = floor_open(stream.interval, floor_open(stream.interval, server_now) - 1)
        earliest = floor_open(stream.interval, server_now) - self.bootstrap_load * INTERVAL_MS[
            stream.interval
        ]
        stored = await self.last_closed(module.NAME, stream)
        start = earliest if stored is None else next_open(stream.interval, stored)
        if since is not None:
            start = min(start, since)  # a specific hole may lie below the stored tail
        if start > end:
            return
        healed = 0
        for request in module.kline_requests(stream, start, end, server_now):
            candles = await self.rest.call(
                request,
                lambda status, body: module.parse_klines(stream, status, body, server_now),
            )
            closed = [c for c in candles if c.closed and start <= c.open_time <= end]
            for offset in range(0, len(closed), CHUNK):
                await ctx.candles_send.send(closed[offset : offset + CHUNK])
            healed += len(closed)
        ctx.stats.rest_candles += healed
        if stored is not None and healed:
            ctx.stats.gaps_healed += 1
            ctx.log.info("%s healed %d candle(s) of %s", module.NAME, healed, stream_key(stream))
