"""Engine timing logic on in-memory streams with the autojump clock: backoff, watchdog,
rotation, rejected subscriptions and missed closed candles."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from fakes import FakeVenue, Script, kline_frame, make_context

from feedd.candle import Candle
from feedd.engine import connector
from feedd.engine.backoff import Backoff
from feedd.engine.connector import Connection
from feedd.engine.context import HealRequest
from feedd.engine.pacing import Pacer
from feedd.engine.session import ACK_TIMEOUT_S, Session
from feedd.engine.shard import run_shard
from feedd.engine.stats import StreamState
from feedd.engine.ws import unwrapped_nursery
from feedd.errors import TransportError
from feedd.exchanges import okx
from feedd.exchanges.contract import Stream

BTC = Stream("BTCUSDT", "1m")
ETH = Stream("ETHUSDT", "1m")
T0 = 1_700_000_040_000


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True, params=sorted(connector.CLIENTS))
def each_connector(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every engine test runs over each connector: the session must not care which."""
    before = connector.selected()
    connector.use(request.param)
    yield request.param
    connector.use(before)


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(initial=1, maximum=8, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not lockstep


def test_backoff_resets_only_after_a_healthy_connection() -> None:
    backoff = Backoff(initial=1, maximum=60, healthy_after=30)
    for _ in range(5):
        backoff.next_delay()
    backoff.connection_lasted(2.0)  # connected, then died: no reset
    assert backoff.attempt == 5
    backoff.connection_lasted(31.0)
    assert backoff.attempt == 0


async def test_pacer_spaces_actions(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(rate=5)
    start = trio.current_time()
    for _ in range(11):
        await pacer.acquire()
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_session_subscribes_and_streams(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    ctx, candles, _ = make_context(venue)
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC, ETH), frozenset())
        await nursery.start(session.run)
        assert ctx.stats.streams_subscribed == 2
        batches = [await candles.receive() for _ in range(4)]
        received = {c.symbol for batch in batches for c in batch}
        assert received == {"BTCUSDT", "ETHUSDT"}
        assert ctx.stats.stream_states == {"BTCUSDT 1m": "live", "ETHUSDT 1m": "live"}
        session.cancel()
    assert venue.open_connections == 0


async def test_watchdog_ends_a_silent_connection(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue(Script(silent=True))
    ctx, _, _ = make_context(venue, silence_timeout=10)
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC,), frozenset())
        await nursery.start(session.run)
        started = trio.current_time()
        await session.attention.wait()
    assert isinstance(session.error, TransportError)
    assert "no frame" in str(session.error)
    assert 10 <= trio.current_time() - started <= 13


async def test_watchdog_notices_one_silent_stream(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue(Script(silent_symbols={"ETHUSDT"}))
    ctx, _, _ = make_context(venue, silence_timeout=10)
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC, ETH), frozenset())
        await nursery.start(session.run)
        await session.attention.wait()
    assert "ETHUSDT 1m" in str(session.error)
    assert "BTCUSDT" not in str(session.error)
    assert ctx.stats.stream_states["ETHUSDT 1m"] == StreamState.SILENT


async def test_rejected_stream_is_isolated(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue(Script(reject_symbols={"FOOUSDT"}))
    ctx, candles, _ = make_context(venue)
    foo = Stream("FOOUSDT", "1m")
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC, foo, ETH), frozenset())
        await nursery.start(session.run)
        # The first request failed whole; each stream was then asked for on its own.
        assert [len(f["params"]) for f in venue.subscribe_frames] == [3, 1, 1, 1]  # type: ignore[arg-type]
        assert ctx.stats.stream_states["FOOUSDT 1m"] == StreamState.REJECTED
        got = {c.symbol for batch in [await candles.receive() for _ in range(4)] for c in batch}
        assert got == {"BTCUSDT", "ETHUSDT"}
        session.cancel()


async def test_missed_closed_candle_requests_a_heal(autojump_clock: trio.testing.MockClock) -> None:
    await trio.sleep(30)  # start mid-minute
    first_open = 0
    venue = FakeVenue(Script(skip_close_of={("BTCUSDT", first_open)}))
    ctx, _, heals = make_context(venue, silence_timeout=100)
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC,), frozenset())
        await nursery.start(session.run)
        # the stream's first frame asks for a heal from the stored tail below it, then the
        # missed close asks for its own candle
        first_frame = await heals.receive()
        assert first_frame == HealRequest(BTC, None, seen_ms=first_open)
        heal = await heals.receive()
        assert heal.stream == BTC
        assert heal.since_ms == first_open
        assert trio.current_time() >= 60
        session.cancel()


async def test_rotation_is_make_before_break(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    ctx, candles, _ = make_context(venue, lifetime=100, silence_timeout=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_shard, ctx, (BTC,))
        arrivals: list[float] = []
        while trio.current_time() < 350:
            await candles.receive()
            arrivals.append(trio.current_time())
        nursery.cancel_scope.cancel()
    assert ctx.stats.rotations == 3
    assert venue.max_open == 2  # the new connection was up before the old one closed
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) <= 1.0 + 1e-6  # not one push missed
    assert ctx.stats.reconnects == 0


async def test_reconnects_back_off(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue(Script(drop_after=0.5))
    ctx, _, heals = make_context(venue)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_shard, ctx, (BTC,))
        await venue.wait_connects(6)
        nursery.cancel_scope.cancel()
    waits = [b - a for a, b in itertools.pairwise(venue.connects)]
    assert waits[-1] > waits[0] * 4  # 1 s doubling to 16 s, jittered
    assert ctx.stats.reconnects >= 5
    # each connection dropped before its first push: no stream spoke, nothing to heal yet
    assert heals.statistics().current_buffer_used == 0


async def test_each_session_heals_below_its_first_candle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream's first candle on every session asks for a heal from the stored tail below
    that candle (the session's own candles may be stored before the heal looks)."""
    venue = FakeVenue(Script(drop_after=2.5))
    ctx, _, heals = make_context(venue)
    firsts: list[int] = []
    from_dead: list[int | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(run_shard, ctx, (BTC,))
        while len(firsts) < 3:
            heal = await heals.receive()
            assert heal.stream == BTC
            if heal.seen_ms is None:  # from the last candle of the connection that died
                from_dead.append(heal.since_ms)
                continue
            assert heal.since_ms is None
            firsts.append(heal.seen_ms)
        nursery.cancel_scope.cancel()
    assert len(venue.connects) == 3  # one first-candle heal per session
    assert firsts == sorted(firsts)
    assert all(t % 60_000 == 0 for t in firsts)
    # sessions are 2.5 s long within one minute: the last candle seen is the first one
    assert from_dead == firsts[:2]


async def test_a_dead_connection_heals_from_the_last_candle_it_saw(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the next session is subscribed, each stream is healed from the newest candle the
    dead connection saw on it, before (and whether or not) the stream speaks again."""
    await trio.sleep(150)  # the third minute: open time 120 s
    venue = FakeVenue(Script(drop_after=2.5))
    ctx, _, heals = make_context(venue)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_shard, ctx, (BTC,))
        first = await heals.receive()
        assert first == HealRequest(BTC, None, seen_ms=120_000)
        await venue.wait_connects(2)
        venue.script.silent = True  # the stream says nothing on the new connection
        reconnect = await heals.receive()
        nursery.cancel_scope.cancel()
    assert reconnect == HealRequest(BTC, 120_000)


def test_heal_requests_merge_to_the_widest() -> None:
    """A pending bootstrap (None: the whole window) is never narrowed by a later, specific
    hole; of two windows the one ending earlier wins (a known end beats "the venue's clock
    at the next round"); between two holes the older one wins."""
    from feedd.engine.backfill import Backfill, Wanted
    from feedd.engine.context import HealRequest

    ctx, _, _ = make_context(FakeVenue(Script()))
    backfill = Backfill(ctx, None, None, 100)  # type: ignore[arg-type]  # only request() runs
    eth, sol = Stream("ETHUSDT", "1m"), Stream("SOLUSDT", "1m")
    backfill.request(HealRequest(BTC, None))
    backfill.request(HealRequest(BTC, 600_000))
    backfill.request(HealRequest(BTC, None, seen_ms=900_000))
    backfill.request(HealRequest(eth, 600_000))
    backfill.request(HealRequest(eth, 300_000))
    backfill.request(HealRequest(eth, 900_000))
    backfill.request(HealRequest(sol, None, seen_ms=900_000))
    backfill.request(HealRequest(sol, None, seen_ms=600_000))
    backfill.request(HealRequest(sol, None))
    assert backfill._pending == {
        BTC: Wanted(None, 900_000),
        eth: Wanted(300_000),
        sol: Wanted(None, 600_000),
    }
    backfill.request(HealRequest(eth, None))
    assert backfill._pending[eth] == Wanted(None)
    assert ctx.stats.backfill_pending == 3


def okx_without_ids(
    reject: frozenset[str] = frozenset(),
) -> Callable[[str], AbstractAsyncContextManager[Connection]]:
    """An in-memory OKX that answers as the 2022 captures show: no ``id`` echoed, one ack
    per arg, and a 60018 error naming the arg for each instId in ``reject``."""

    async def serve(stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)  # type: ignore[arg-type]
            ws = await request.accept()
            try:
                while True:
                    text = await ws.get_message()
                    if text == "ping":
                        await ws.send_message("pong")
                        continue
                    for arg in orjson.loads(text)["args"]:
                        answer: dict[str, object] = {"event": "subscribe", "arg": arg}
                        if arg["instId"] in reject:
                            msg = f"Wrong URL or channel:{arg['channel']},instId:{arg['instId']}"
                            answer = {"event": "error", "code": "60018", "msg": msg}
                        await ws.send_message(orjson.dumps(answer).decode())
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Connection]:
        client, server = trio.testing.memory_stream_pair()
        async with unwrapped_nursery() as nursery:
            nursery.start_soon(serve, server)
            async with connector.client().wrap_stream(client, "fake", "/ws/v5/business") as ws:
                yield ws
            nursery.cancel_scope.cancel()

    return connect


async def test_okx_acks_without_id_are_matched_on_their_arg(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue #11.4: acks that do not echo the request id still answer it (two requests here:
    OKX takes 100 args per request), so the session is ready at once instead of timing out
    and reconnecting forever."""
    ctx, _, _ = make_context(FakeVenue())
    ctx.module = okx
    ctx.connect = okx_without_ids()
    streams = tuple(Stream(f"C{i}USDT", "1m") for i in range(150))
    async with trio.open_nursery() as nursery:
        session = Session(ctx, streams, frozenset())
        started = trio.current_time()
        await nursery.start(session.run)
        assert trio.current_time() - started < ACK_TIMEOUT_S / 10
        assert ctx.stats.streams_subscribed == 150
        assert set(ctx.stats.stream_states.values()) == {StreamState.PENDING}
        session.cancel()
    assert ctx.stats.streams_subscribed == 0


async def test_okx_refusal_without_id_is_matched_on_the_arg_it_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctx, _, _ = make_context(FakeVenue())
    ctx.module = okx
    ctx.connect = okx_without_ids(reject=frozenset({"C120-USDT-SWAP"}))
    streams = tuple(Stream(f"C{i}USDT", "1m") for i in range(150))
    async with trio.open_nursery() as nursery:
        session = Session(ctx, streams, frozenset())
        started = trio.current_time()
        await nursery.start(session.run)
        assert trio.current_time() - started < ACK_TIMEOUT_S / 10
        assert ctx.stats.streams_subscribed == 149
        assert ctx.stats.stream_states.pop("C120USDT 1m") == StreamState.REJECTED
        assert set(ctx.stats.stream_states.values()) == {StreamState.PENDING}
        session.cancel()


async def test_a_burst_reaches_the_writer_in_a_few_lists(each_connector: str) -> None:
    """Frames that arrive together are parsed in one step and handed on as one list (one
    channel send per wake-up, not per frame), in order, with either connector; a ping
    that follows is answered."""
    frames = 200
    ctx, _, _ = make_context(FakeVenue())
    # unbuffered: the session blocks on its first list while the rest arrives
    candles_send, candles_recv = trio.open_memory_channel[list[Candle]](0)
    ctx.candles_send = candles_send
    servers, server_got = trio.open_memory_channel[trio_websocket.WebSocketConnection](1)

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Connection]:
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            request = await trio_websocket.wrap_server_stream(nursery, server_stream)  # type: ignore[arg-type]
            await servers.send(await request.accept())
            await trio.sleep_forever()

        async with unwrapped_nursery() as nursery:
            nursery.start_soon(serve)
            async with connector.client().wrap_stream(client_stream, "fake", "/") as conn:
                yield conn
            nursery.cancel_scope.cancel()

    ctx.connect = connect
    async with trio.open_nursery() as nursery:
        session = Session(ctx, (BTC,), frozenset())
        nursery.start_soon(session.run)
        server = await server_got.receive()
        request = orjson.loads(await server.get_message())
        await server.send_message(orjson.dumps({"result": None, "id": request["id"]}).decode())
        for i in range(frames):
            frame = kline_frame("BTCUSDT", T0, closed=False)
            await server.send_message(frame.replace('"o":"100.0"', f'"o":"{i}"'))
        lists = []
        with trio.fail_after(10):
            while sum(map(len, lists)) < frames:
                lists.append(await candles_recv.receive())
            await server.ping(b"still there?")
        assert [c.open for batch in lists for c in batch] == [str(i) for i in range(frames)]
        assert len(lists) <= 3, [len(b) for b in lists]
        session.cancel()
