"""Every simulator fault on all three venues, one after another and several at once; after
each run the database equals the truth (closed candles: none missing, duplicated or wrong).

feedd runs in-process here, so tests wait on its commits. Its reconnect backoff resets only
after 60 real seconds of health, which a test at 60x never reaches: each test keeps to a few
reconnects, and the faults are spread over several fresh instances instead of one long run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio
from e2e import compare, feedd_config, running_feedd, wait_for_truth

from chaos.harness import VENUES
from feedd.engine.stats import ExchangeStats
from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.faults import GARBAGE, Faults
from feedd.sim.settings import SimSettings

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PLAN = {name: SYMBOLS for name in VENUES}
BOOTSTRAP = 5
#: the kline endpoints, where a REST fault hits a heal rather than the server-time call
KLINES_PATH = {
    "binance_futures": "/fapi/v1/klines",
    "bybit_futures": "/v5/market/kline",
    "okx_futures": "/api/v5/market/",
}
#: real seconds the store gets to heal after the last fault
HEAL_S = 10.0
#: sim milliseconds into a minute at which faults strike (mid-candle)
MID = 20_000


async def wait_all(service: Service, sim: Simulator, db: Path, start: int, end: int) -> None:
    """Wait (on commits) until every venue equals the truth; after HEAL_S, fail showing
    what differs."""
    with trio.move_on_after(HEAL_S):
        for name in VENUES:
            await wait_for_truth(service, sim, db, name, SYMBOLS, start, end)
    assert_equal_to_truth(sim, db, start, end)


def on_all(sim: Simulator, *faults: Callable[[Faults], object]) -> None:
    """Apply ``faults`` in turn to every venue."""
    for name in VENUES:
        for fault in faults:
            fault(sim.venues[name].faults)


def throttle(sim: Simulator) -> None:
    """Each venue's rate-limit answer to its next REST calls (Retry-After where it has one)."""
    binance = sim.venues["binance_futures"].faults
    binance.rest_throttle(1, 429, 1.0)
    binance.rest_throttle(1, 418, 1.0)
    # Bybit's HTTP 403 is a 10-minute IP ban; retCode 10006 under HTTP 200 is the soft limit.
    sim.venues["bybit_futures"].faults.rest_throttle(2, 200, 1.0)
    # OKX: 50011 under HTTP 429 without Retry-After (feedd pauses its REST from 1 s, growing).
    sim.venues["okx_futures"].faults.rest_throttle(1, 429, 1.0)


def assert_equal_to_truth(sim: Simulator, db: Path, start: int, end: int) -> None:
    for name in VENUES:
        assert compare(sim, db, name, SYMBOLS, start, end) == [], name


async def until(service: Service, check: Callable[[ExchangeStats], bool]) -> None:
    """Wait (on commits) until ``check`` holds for every venue's ingest counters."""
    stats = service.state.supervisor.stats
    await service.state.writer.wait_committed(lambda: all(check(stats[n]) for n in VENUES))


async def until_sim(
    service: Service, sim: Simulator, check: Callable[[Counter[str]], bool]
) -> None:
    """Wait (on commits) until ``check`` holds for every simulated venue's counters."""
    venues = [sim.venues[name].stats for name in VENUES]
    await service.state.writer.wait_committed(lambda: all(check(v) for v in venues))


async def inject_until_reconnected(
    service: Service, sim: Simulator, fault: Callable[[Faults], int], count: int
) -> None:
    """Give each venue's connections ``fault`` until the venue has reconnected ``count``
    times. A fault returns how many connections it reached: right after a reconnect the
    simulator may not have registered the new session yet (0), and the venue is asked again
    after the next commit rather than waited for forever."""
    stats, writer = service.state.supervisor.stats, service.state.writer
    reached: set[str] = set()
    while not all(reconnected(count)(stats[n]) for n in VENUES):
        for name in VENUES:
            if name not in reached and fault(sim.venues[name].faults) > 0:
                reached.add(name)
        batches = writer.stats.batches

        def moved(before: int = batches) -> bool:
            return writer.stats.batches > before or all(
                reconnected(count)(stats[n]) for n in VENUES
            )

        await writer.wait_committed(moved)


def live(s: ExchangeStats) -> bool:
    """Every stream subscribed: the session's watchdog is running."""
    return s.streams_subscribed >= len(SYMBOLS)


def reconnected(count: int) -> Callable[[ExchangeStats], bool]:
    """``count`` reconnects so far, and connected again."""
    return lambda s: s.reconnects >= count and s.connections == 1


async def test_stream_faults_one_after_another(tmp_path: Path) -> None:
    """Garbage, truncated and wrongly typed frames, a closed candle never sent and one sent
    twice (their heals throttled), a drop mid-candle, an oversized frame, a stall of the
    connection and one of a single stream: each once the previous one has played out."""
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, _):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(90):
            await sim.sleep_until_ms(start + MINUTE_MS + MID)
            on_all(sim, lambda f: [f.send_garbage(kind) for kind in GARBAGE])
            await until(service, lambda s: s.parse_errors >= len(GARBAGE))
            throttle(sim)
            on_all(sim, lambda f: f.skip_final("BTCUSDT"), lambda f: f.duplicate_final("ETHUSDT"))
            # The heals meet the rate limits and complete later, while the next faults play
            # out.
            await until_sim(service, sim, lambda v: v["rest_faults"] >= 1)
            await sim.sleep_until_ms(sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS + MID)
            await inject_until_reconnected(service, sim, lambda f: f.drop_connections(), 1)
            await inject_until_reconnected(service, sim, lambda f: f.send_oversized(), 2)
            # The watchdog runs once every subscription is answered: a stall that began
            # between a reconnect and its acks only delays them, and reconnects nothing.
            await until(service, lambda s: reconnected(2)(s) and live(s))
            on_all(sim, lambda f: f.stall(5.0))  # > silence_timeout (3 s): the watchdog acts
            await until(service, reconnected(3))
            on_all(sim, lambda f: f.stall_symbol("SOLUSDT", 8.0))  # > the stream's 6 s
            await until(service, reconnected(4))
            end = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_all(service, sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
        stats = service.state.supervisor.stats
    assert_equal_to_truth(sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
    for name in VENUES:
        venue = sim.venues[name].stats
        # the oversized frame goes out the way garbage does, and is counted with it
        assert venue["garbage"] == len(GARBAGE) + 1 and venue["oversized"] == 1, name
        assert venue["skipped_finals"] == 1 and venue["duplicated_finals"] == 1, name
        assert venue["rest_faults"] == (1 if name == "okx_futures" else 2), name
        assert stats[name].reconnects == 4, name


async def test_subscription_and_lifetime_faults(tmp_path: Path) -> None:
    """A rejected subscription (then accepted again), a connection lifetime that closes every
    connection, and the service-upgrade notice (OKX's 64008; the others simply close)."""
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, _):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        stats = service.state.supervisor.stats
        with trio.fail_after(90):
            await sim.sleep_until_ms(start + MINUTE_MS + MID)
            on_all(sim, lambda f: f.reject_symbol("ETHUSDT"), lambda f: f.drop_connections())
            await until(service, lambda s: s.stream_states.get("ETHUSDT 1m") == "rejected")
            minute = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
            await sim.sleep_until_ms(minute + MID)
            on_all(sim, lambda f: f.accept_symbol("ETHUSDT"), lambda f: f.set_lifetime(2.0))
            # Every connection older than 2 s closes now, the next ones 2 s after they open
            # (OKX announces it with 64008 first, so feedd rotates instead of reconnecting).
            await until(service, lambda s: s.reconnects + s.rotations >= 2)
            on_all(sim, lambda f: f.set_lifetime(None))
            minute += 4 * MINUTE_MS
            await sim.sleep_until_ms(minute + MID)
            on_all(sim, lambda f: f.announce_close(after_s=1.0))
            end = minute + 8 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_all(service, sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
        live = {name: stats[name].stream_states.get("ETHUSDT 1m") for name in VENUES}
    assert_equal_to_truth(sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
    assert live == dict.fromkeys(VENUES, "live")
    assert sim.venues["okx_futures"].stats["notices"] >= 1
    assert stats["okx_futures"].rotations >= 2  # make-before-break on each notice
    for name in VENUES:
        assert stats[name].reconnects >= (1 if name == "okx_futures" else 3), name


async def test_faults_all_at_once(tmp_path: Path) -> None:
    """A drop mid-candle with garbage, an oversized frame, a missed and a repeated close, a
    stalled stream, a rejected symbol and throttled REST, all in the same moment."""
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, _):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(60):
            await sim.sleep_until_ms(start + 2 * MINUTE_MS + MID)
            throttle(sim)
            on_all(
                sim,
                lambda f: f.skip_final("BTCUSDT"),
                lambda f: f.duplicate_final("SOLUSDT"),
                lambda f: f.stall_symbol("ETHUSDT", 7.0),
                lambda f: f.send_garbage("truncated"),
                lambda f: f.send_oversized(),
                lambda f: f.reject_symbol("SOLUSDT"),
                lambda f: f.drop_connections(),
            )
            await sim.sleep_until_ms(start + 4 * MINUTE_MS + MID)
            on_all(sim, lambda f: f.accept_symbol("SOLUSDT"), lambda f: f.drop_connections())
            end = start + 12 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_all(service, sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
        stats = service.state.supervisor.stats
    assert_equal_to_truth(sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
    for name in VENUES:
        assert stats[name].reconnects >= 2, name
        assert sim.venues[name].stats["rest_faults"] >= 1, name


async def test_rest_errors_under_http_200(tmp_path: Path) -> None:
    """A heal (of a closed candle never sent) whose kline requests are first answered with
    the venue's error envelope under HTTP 200 ("internal error, try again"; Binance sends
    those as 5xx, so under 200 it must not pass for candles either). A transient error must
    be retried: the candle is healed and the stream stays live."""
    db = tmp_path / "ohlcv.db"
    async with running_feedd(tmp_path, PLAN, bootstrap_load=BOOTSTRAP) as (sim, service, _):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(40):
            await sim.sleep_until_ms(start + MINUTE_MS + MID)
            for name in VENUES:
                faults = sim.venues[name].faults
                faults.rest_error(1, status=200, path=KLINES_PATH[name])
                # the venue's own status too: 503 on Binance, 200 on the others
                faults.rest_error(1, path=KLINES_PATH[name])
                faults.skip_final("BTCUSDT")
            end = start + 5 * MINUTE_MS
            await sim.sleep_until_ms(end + MINUTE_MS)
            await wait_all(service, sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
        states = {n: dict(service.state.supervisor.stats[n].stream_states) for n in VENUES}
    for name in VENUES:
        assert sim.venues[name].stats["rest_faults"] == 2, name
        assert states[name]["BTCUSDT 1m"] == "live", name


async def test_slow_first_subscription(tmp_path: Path) -> None:
    """The venues answer the first subscriptions late (stalled for 2.5 s at start, as when
    hundreds of streams subscribe paced): the bootstrap, done meanwhile over REST, ends where
    the stream's first frame does not begin, and the candles between must still be fetched."""
    db = tmp_path / "ohlcv.db"
    async with open_simulator(SimSettings(venues=VENUES)) as sim:
        on_all(sim, lambda f: f.stall(2.5))
        cfg = feedd_config(sim, PLAN, bootstrap_load=BOOTSTRAP)
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, db)
            with trio.fail_after(40):
                end = start + 5 * MINUTE_MS
                await sim.sleep_until_ms(end + MINUTE_MS)
                await wait_all(service, sim, db, start - (BOOTSTRAP - 1) * MINUTE_MS, end)
            service.stop.set()
