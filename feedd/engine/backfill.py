"""History over REST: bootstrap recent candles at start and heal gaps on request.

Work is a queue of streams with the oldest open time still wanted; requests for one stream
merge. A heal "from the stored tail" looks for the tail below the first candle the new
session saw, because that session's own candles may be stored before the heal looks; with
nothing stored below it, the whole bootstrap window up to that candle is wanted. A window
keeps its end once known (that candle, or the venue's clock at the first round that takes
it), not the clock of whichever round gets to it: with many streams queued that can be
hours later, and a window sliding with the queue would leave holes behind it. Within the
window only the open times not yet stored closed are fetched, so holes left by a crash are
filled too. Each round first asks the exchange for its clock: whether a REST row is closed
is decided by exchange time (never the local clock), later than every heal queued before
the round.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from feedd.engine.context import ExchangeContext, HealRequest, stream_key
from feedd.engine.rest import RestClient
from feedd.engine.stats import StreamState
from feedd.errors import ExchangeError, FeeddError, RateLimited
from feedd.exchanges.contract import Stream
from feedd.intervals import INTERVAL_MS, floor_open, next_open

#: candles per writer hand-off
CHUNK = 1000


class StoredHistory(Protocol):
    """What backfill needs to know of the store (the store's Reader provides it)."""

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None: ...

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]: ...


class StoreGenerations(Protocol):
    """How the engine learns that the store lost its history (its file deleted and made anew):
    a count that grows each time (the store's writer provides it)."""

    @property
    def generation(self) -> int: ...

    @property
    def emptied(self) -> int:
        """Times the store lost its rows, wiped by an operator (on this node or another) or
        made anew: a count that grows each time."""
        ...

    async def wait_recreated(self, seen: int) -> int:
        """Return the generation once it is past ``seen``."""
        ...


#: refusals in a row before a stream's backfill is given up (the stream marked rejected)
MAX_REFUSALS = 3
REFUSAL_RETRY_S = 5.0


@attrs.frozen
class Wanted:
    """What one stream still needs: the closed candles from ``since_ms`` on, or (None) the
    whole bootstrap window ending at exchange time ``window_end_ms`` (None: the venue's clock
    at the round that takes it)."""

    since_ms: int | None
    window_end_ms: int | None = None

    def merge(self, other: Wanted) -> Wanted:
        """The wider of two: a window covers any hole (and the earlier window is the wider);
        between two holes the older one, since the stored tail may already be past it."""
        if self.since_ms is None or other.since_ms is None:
            ends = [w.window_end_ms for w in (self, other) if w.since_ms is None]
            known = [end for end in ends if end is not None]
            return Wanted(None, min(known) if known else None)
        return self if self.since_ms <= other.since_ms else other


class Backfill:
    def __init__(
        self,
        ctx: ExchangeContext,
        rest: RestClient,
        history: StoredHistory,
        bootstrap_load: int,
    ) -> None:
        self.ctx = ctx
        self.rest = rest
        self.history = history
        self.bootstrap_load = bootstrap_load
        self._pending: dict[Stream, Wanted] = {}
        #: every stream ever asked for, to bootstrap again after the store lost its history
        self._streams: set[Stream] = set()
        #: consecutive refusals per stream
        self._refusals: dict[Stream, int] = {}
        self._wake = trio.Event()

    def request(self, heal: HealRequest) -> None:
        """Queue a heal from ``since_ms`` (None: the whole bootstrap window up to ``seen_ms``
        or, without it, the venue's clock at the next round)."""
        self._want(heal.stream, self._wanted(heal, heal.since_ms))

    def rebootstrap(self) -> int:
        """Queue the whole bootstrap window of every stream, as at start (the store lost its
        history); returns how many streams. Only missing candles are fetched."""
        for stream in self._streams:
            self._want(stream, Wanted(None))
        return len(self._streams)

    def _want(self, stream: Stream, wanted: Wanted) -> None:
        self._streams.add(stream)
        known = self._pending.get(stream)
        self._pending[stream] = wanted if known is None else known.merge(wanted)
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
                since = heal.since_ms
                if since is None:
                    since = await self._tail(heal.stream, heal.seen_ms)
                self._want(heal.stream, self._wanted(heal, since))

    @staticmethod
    def _wanted(heal: HealRequest, since: int | None) -> Wanted:
        return Wanted(since) if since is not None else Wanted(None, heal.seen_ms)

    async def _tail(self, stream: Stream, before: int | None) -> int | None:
        """The open time after the newest stored closed candle older than ``before`` (None:
        nothing stored)."""
        stored = await self.history.last_closed_open_time(
            self.ctx.module.NAME, stream.symbol, stream.interval, before
        )
        return None if stored is None else next_open(stream.interval, stored)

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
        retry_later = False
        for done, (stream, wanted) in enumerate(batch.items(), start=1):
            if wanted.since_ms is None and wanted.window_end_ms is None:
                wanted = Wanted(None, server_now)  # a retry must not slide the window on
            try:
                since = wanted.since_ms
                if since is None:
                    assert wanted.window_end_ms is not None
                    since = self._window_start(stream, wanted.window_end_ms)
                await self._heal(stream, since, server_now, gap=wanted.since_ms is not None)
                self._refusals.pop(stream, None)
            except RateLimited as exc:
                # The REST client already waited out the venue's limit several times; that is
                # no verdict on the stream, so ask again (the pause holds the next round).
                self.ctx.log.warning(
                    "%s backfill of %s rate limited, will retry: %s",
                    module.NAME,
                    stream_key(stream),
                    exc,
                )
                self._want(stream, wanted)
            except ExchangeError as exc:
                # Venues answer transient trouble with error envelopes too (Bybit 10016,
                # OKX 50001, Binance 5xx): only a repeated refusal is taken as final.
                refusals = self._refusals.get(stream, 0) + 1
                if refusals < MAX_REFUSALS:
                    self._refusals[stream] = refusals
                    self.ctx.log.warning(
                        "%s backfill of %s refused (%s); retrying in %g s",
                        module.NAME,
                        stream_key(stream),
                        exc,
                        REFUSAL_RETRY_S,
                    )
                    self._want(stream, wanted)
                    retry_later = True
                else:
                    self._refusals.pop(stream, None)
                    self.ctx.log.warning(
                        "%s backfill of %s refused %d times: %s",
                        module.NAME,
                        stream_key(stream),
                        refusals,
                        exc,
                    )
                    self.ctx.stats.set_stream(stream_key(stream), StreamState.REJECTED, str(exc))
            except FeeddError as exc:
                self.ctx.log.warning(
                    "%s backfill of %s failed, will retry: %s",
                    module.NAME,
                    stream_key(stream),
                    exc,
                )
                self._want(stream, wanted)
            self.ctx.stats.backfill_pending = len(self._pending) + len(batch) - done
        if retry_later:
            await trio.sleep(REFUSAL_RETRY_S)

    def _window_start(self, stream: Stream, end_ms: int) -> int:
        """The oldest open time of the bootstrap window ending at exchange time ``end_ms``."""
        interval = stream.interval
        return floor_open(interval, end_ms) - self.bootstrap_load * INTERVAL_MS[interval]

    async def _heal(self, stream: Stream, start: int, server_now: int, *, gap: bool) -> None:
        """Store the closed candles of [start, the newest closed by ``server_now``] that are
        not stored closed yet; ``gap``: a hole was asked for (counted as a gap healed)."""
        module, ctx = self.ctx.module, self.ctx
        interval = stream.interval
        # The newest candle that has closed by the exchange's clock.
        end = floor_open(interval, floor_open(interval, server_now) - 1)
        if start > end:
            return
        # Candles fetched for a store that has since been emptied (POST /deleteDatabase)
        # are not sent: the operator asked for none of these, and a store made anew gets
        # its bootstrap asked for again.
        emptied = ctx.store_emptied()
        stored = set(
            await self.history.closed_open_times(module.NAME, stream.symbol, interval, start, end)
        )
        healed = 0
        ranges = missing_ranges(interval, start, end, stored)
        # Progress for /status; 1M counts as 28 days, close enough for a progress bar.
        wanted = sum((last - first) // INTERVAL_MS[interval] + 1 for first, last in ranges)
        key = stream_key(stream)
        try:
            for first, last in ranges:
                for request in module.kline_requests(stream, first, last, server_now):
                    ctx.stats.backfilling[key] = min(1.0, round(healed / wanted, 3))
                    candles = await self.rest.call(
                        request,
                        lambda status, body: module.parse_klines(stream, status, body, server_now),
                    )
                    closed = [c for c in candles if c.closed and first <= c.open_time <= last]
                    if ctx.store_emptied() != emptied:
                        ctx.log.info(
                            "%s: store emptied during a heal of %s; its candles dropped",
                            module.NAME,
                            key,
                        )
                        return
                    for offset in range(0, len(closed), CHUNK):
                        await ctx.candles_send.send(closed[offset : offset + CHUNK])
                    healed += len(closed)
        finally:
            ctx.stats.backfilling.pop(key, None)
        ctx.stats.rest_candles += healed
        if gap and healed:
            ctx.stats.gaps_healed += 1
            ctx.log.info("%s healed %d candle(s) of %s", module.NAME, healed, stream_key(stream))


def missing_ranges(interval: str, start: int, end: int, stored: set[int]) -> list[tuple[int, int]]:
    """Contiguous runs of open times in [start, end] that are not in ``stored``."""
    ranges: list[tuple[int, int]] = []
    run_start: int | None = None
    previous = start
    t = start
    while t <= end:
        if t in stored:
            if run_start is not None:
                ranges.append((run_start, previous))
                run_start = None
        elif run_start is None:
            run_start = t
        previous = t
        t = next_open(interval, t)
    if run_start is not None:
        ranges.append((run_start, previous))
    return ranges
