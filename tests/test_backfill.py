"""Backfill and REST pacing under the autojump clock, against an in-memory Binance REST venue
(httpx's MockTransport) and an in-memory store: which open times a heal asks for, when
rate limits pause it, and that the REST client counts and waits out each limit once."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing
from fakes import FakeVenue, Script, make_context

from feedd.candle import Candle
from feedd.engine.backfill import Backfill
from feedd.engine.context import ExchangeContext, HealRequest
from feedd.engine.pacing import Pacer
from feedd.engine.rest import RestClient
from feedd.engine.stats import StreamState
from feedd.exchanges import bybit
from feedd.exchanges.contract import Stream

MINUTE_MS = 60_000
#: the venue's clock at trio time 0
EPOCH_MS = 1_772_400_000_000
BTC = Stream("BTCUSDT", "1m")
ETH = Stream("ETHUSDT", "1m")
TIME = "/fapi/v1/time"
KLINES = "/fapi/v1/klines"


def venue_ms() -> int:
    return EPOCH_MS + int(trio.current_time() * 1000)


@attrs.define(eq=False)
class RestVenue:
    """Binance's /fapi/v1/time and /fapi/v1/klines; ``answers`` per path are served first."""

    answers: dict[str, list[httpx.Response]] = attrs.field(factory=dict)
    kline_calls: list[tuple[str, int, int]] = attrs.field(factory=list)
    asked_at: list[float] = attrs.field(factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked_at.append(trio.current_time())
        if self.answers.get(request.url.path):
            return self.answers[request.url.path].pop(0)
        now = venue_ms()
        if request.url.path == TIME:
            return httpx.Response(200, content=orjson.dumps({"serverTime": now}))
        params = request.url.params
        start, end = int(params["startTime"]), int(params["endTime"])
        self.kline_calls.append((params["symbol"], start, end))
        rows = []
        for t in range(start, min(end, now) + 1, MINUTE_MS):
            rows.append(
                [t, "1", "2", "0.5", "1.5", "10", t + MINUTE_MS - 1, "15", 3, "5", "7", "0"]
            )
        return httpx.Response(200, content=orjson.dumps(rows))


@attrs.define(eq=False)
class MemoryHistory:
    """The store's answers to backfill, kept in memory; candles sent to the writer land here."""

    closed: dict[str, set[int]] = attrs.field(factory=dict)

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None:
        times = [t for t in self.closed.get(symbol, ()) if before is None or t < before]
        return max(times, default=None)

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]:
        return sorted(t for t in self.closed.get(symbol, ()) if start <= t <= end)

    def store(self, candles: list[Candle]) -> None:
        for candle in candles:
            if candle.closed:
                self.closed.setdefault(candle.symbol, set()).add(candle.open_time)


@asynccontextmanager
async def backfilling(
    venue: RestVenue,
    history: MemoryHistory,
    streams: tuple[Stream, ...],
    load: int,
    emptied: Callable[[], int] | None = None,
) -> AsyncIterator[tuple[ExchangeContext, trio.MemorySendChannel[HealRequest]]]:
    ctx, candles, _ = make_context(FakeVenue(Script()))
    if emptied is not None:
        ctx.store_emptied = emptied
    heal_send, heal_recv = trio.open_memory_channel[HealRequest](100)
    async with httpx.AsyncClient(transport=httpx.MockTransport(venue.handle)) as client:
        rest = RestClient(ctx.module, "http://venue", client, ctx.stats, ctx.log)
        backfill = Backfill(ctx, rest, history, load)

        async def write() -> None:
            async for batch in candles:
                history.store(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await nursery.start(backfill.run, streams, heal_recv)
            yield ctx, heal_send
            nursery.cancel_scope.cancel()


async def settle(ctx: ExchangeContext) -> None:
    """Let the backfill go idle (the autojump clock only jumps once every task waits)."""
    await trio.testing.wait_all_tasks_blocked()
    while ctx.stats.backfill_pending:
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()


async def test_bootstrap_window_ends_at_the_first_live_candle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The live stream stores a stream's candles from its first one on while the bootstrap
    waits behind an hour-long REST ban; the bootstrap then still covers the ``load`` candles
    before that first live one, not just the ``load`` candles before its late turn."""
    venue = RestVenue({TIME: [httpx.Response(418, headers={"Retry-After": "3600"})]})
    history = MemoryHistory()
    launch = venue_ms() // MINUTE_MS * MINUTE_MS
    first_live = launch + 2 * MINUTE_MS
    async with backfilling(venue, history, (BTC,), load=10) as (ctx, heal_send):
        await heal_send.send(HealRequest(BTC, None, seen_ms=first_live))
        # what the live stream stored meanwhile: an hour from its first candle on
        history.closed["BTCUSDT"] = {first_live + m * MINUTE_MS for m in range(60)}
        await settle(ctx)
    assert trio.current_time() >= 3600
    assert min(history.closed["BTCUSDT"]) == first_live - 10 * MINUTE_MS
    assert history.closed["BTCUSDT"] == set(
        range(first_live - 10 * MINUTE_MS, first_live + 60 * MINUTE_MS, MINUTE_MS)
    )
    assert ctx.stats.rest_rate_limited == 1


@attrs.define(eq=False)
class WipedWhileAnswering(RestVenue):
    """The store is emptied while the first klines page travels."""

    wipes: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == KLINES and not self.kline_calls:
            self.wipes += 1
        return super().handle(request)


async def test_a_heal_fetched_across_an_emptied_store_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """POST /deleteDatabase while a heal's page is on its way: that page is not stored (the
    operator asked for an empty store, and only what is collected from then on)."""
    venue = WipedWhileAnswering()
    history = MemoryHistory()
    now = venue_ms() // MINUTE_MS * MINUTE_MS
    emptied = lambda: venue.wipes  # noqa: E731
    async with backfilling(venue, history, (), load=10, emptied=emptied) as (ctx, heal_send):
        await heal_send.send(HealRequest(BTC, None, seen_ms=now))
        await settle(ctx)
        assert len(venue.kline_calls) == 1 and history.closed == {}
        # A heal that starts after the wipe stores as always.
        await heal_send.send(HealRequest(ETH, None, seen_ms=now))
        await settle(ctx)
    assert history.closed == {"ETHUSDT": {now - m * MINUTE_MS for m in range(1, 11)}}
    assert ctx.stats.rest_candles == 10


async def test_session_heal_looks_below_the_first_candle_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reconnect's heal starts after the stored tail below the new session's first candle:
    the newer candles that session already stored do not hide the hole."""
    venue = RestVenue()
    history = MemoryHistory()
    async with backfilling(venue, history, (), load=10) as (ctx, heal_send):
        now = venue_ms() // MINUTE_MS * MINUTE_MS
        before = {now - m * MINUTE_MS for m in range(30, 40)}  # stored before the drop
        after = {now - m * MINUTE_MS for m in range(1, 5)}  # the new session's own
        history.closed["BTCUSDT"] = before | after
        await heal_send.send(HealRequest(BTC, None, seen_ms=now - 4 * MINUTE_MS))
        await settle(ctx)
    assert venue.kline_calls == [("BTCUSDT", now - 29 * MINUTE_MS, now - 5 * MINUTE_MS)]
    assert {now - m * MINUTE_MS for m in range(1, 40)} <= history.closed["BTCUSDT"]
    assert ctx.stats.gaps_healed == 1


async def test_a_heal_without_a_stored_tail_is_the_window_before_the_candle_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    venue = RestVenue()
    history = MemoryHistory()
    async with backfilling(venue, history, (), load=5) as (ctx, heal_send):
        now = venue_ms() // MINUTE_MS * MINUTE_MS
        await heal_send.send(HealRequest(ETH, None, seen_ms=now - 20 * MINUTE_MS))
        await settle(ctx)
    assert venue.kline_calls == [("ETHUSDT", now - 25 * MINUTE_MS, now - MINUTE_MS)]


async def test_rate_limits_never_mark_a_stream_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More 429s in a row than the REST client and the refusal count allow: the stream is
    retried after the pauses, never given up."""
    venue = RestVenue({KLINES: [httpx.Response(429) for _ in range(20)]})
    history = MemoryHistory()
    launch = venue_ms() // MINUTE_MS * MINUTE_MS
    async with backfilling(venue, history, (BTC,), load=3) as (ctx, _):
        await settle(ctx)
        end = venue_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS
    assert ctx.stats.stream_states.get("BTCUSDT 1m") != StreamState.REJECTED
    # The venue clock is the wall clock: a minute may close between the heal and ``end``.
    assert history.closed["BTCUSDT"] in [
        set(range(launch - 3 * MINUTE_MS, newest + 1, MINUTE_MS))
        for newest in (end - MINUTE_MS, end)
    ]
    assert ctx.stats.rest_rate_limited == 20


# ----------------------------------------------------------------------------- REST client


@asynccontextmanager
async def rest_client(
    handler: Callable[[httpx.Request], httpx.Response], module: object = None
) -> AsyncIterator[RestClient]:
    ctx, _, _ = make_context(FakeVenue(Script()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield RestClient(module or ctx.module, "http://venue", client, ctx.stats, ctx.log)  # type: ignore[arg-type]


async def test_a_background_client_parses_off_the_event_loop() -> None:
    """A job's pages (1,500 rows, tens of ms to parse) are parsed in a worker thread, so that
    live ingest on the event loop does not wait for them; a heal's are parsed on the loop."""
    loop = threading.get_ident()
    parsed_in = []

    def parse(status: int, body: bytes) -> int:
        parsed_in.append(threading.get_ident())
        return status

    async with rest_client(RestVenue().handle) as rest:
        assert await rest.call(rest.module.time_request(), parse) == 200
        rest.background = True
        assert await rest.call(rest.module.time_request(), parse) == 200
    assert parsed_in[0] == loop
    assert parsed_in[1] != loop


async def test_a_parse_error_in_the_worker_thread_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    venue = RestVenue({TIME: [httpx.Response(200, content=b"{not json")]})
    async with rest_client(venue.handle) as rest:
        rest.background = True
        module = rest.module
        assert await rest.call(module.time_request(), module.parse_time) > EPOCH_MS
    assert len(venue.asked_at) == 2  # the first answer did not parse: asked again


async def test_retry_after_is_waited_once(autojump_clock: trio.testing.MockClock) -> None:
    venue = RestVenue({TIME: [httpx.Response(429, headers={"Retry-After": "7"})]})
    async with rest_client(venue.handle) as rest:
        module = rest.module
        await rest.call(module.time_request(), module.parse_time)
    first, second = venue.asked_at
    assert second - first == pytest.approx(7.0, abs=0.1)  # not 7 + 7, nor 30
    assert rest.stats.rest_rate_limited == 1


async def test_a_limit_in_the_body_pauses_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bybit's retCode 10006 comes under HTTP 200: it is a rate limit all the same."""
    limited = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "time": 1}
    ok = {"retCode": 0, "retMsg": "OK", "result": {"timeSecond": "1", "timeNano": "1"}}
    answers = [orjson.dumps(limited), orjson.dumps(ok)]
    asked: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(trio.current_time())
        return httpx.Response(200, content=answers.pop(0))

    async with rest_client(handler, bybit) as rest:
        await rest.call(bybit.time_request(), bybit.parse_time)
    assert rest.stats.rest_rate_limited == 1
    assert asked[1] - asked[0] >= 0.5  # the first backoff step, 1 s jittered


async def test_overlapping_pauses_end_at_the_later_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(rate=10, burst=10)
    pacer.pause_until(trio.current_time() + 5)
    pacer.pause_until(trio.current_time() + 3)
    start = trio.current_time()
    await pacer.acquire()
    assert trio.current_time() - start == pytest.approx(5.1, abs=0.01)


async def test_a_pause_during_a_wait_holds_the_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(rate=1)
    await pacer.acquire()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pacer.acquire)
        await trio.sleep(0.5)
        pacer.pause_until(trio.current_time() + 4)
    assert trio.current_time() - start == pytest.approx(5.5, abs=0.01)
