"""The kline pusher of one session: forming updates at most every ``update_interval_s`` when
trades happened, exactly one closing frame per candle (faults permitting), and the template
frames of benchmark mode.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

from feedd.intervals import close_time, floor_open, next_open
from feedd.sim.bench import bench_open_ms
from feedd.sim.market import Bar
from feedd.sim.session import Session, Sub

if TYPE_CHECKING:
    from feedd.sim.venue import Venue

#: a pusher that fell this many candles behind skips ahead instead of replaying them all
MAX_CATCH_UP = 1000


async def run_pusher(venue: Venue, session: Session) -> None:
    """Push one session's klines until cancelled (or benchmark frames in bench mode)."""
    if venue.settings.bench:
        await _run_bench(venue, session)
        return
    while True:
        now_ms = venue.clock.now_ms()
        now = trio.current_time()
        deadline = float("inf")
        if session.subs and not session.silent and not session.closing:
            deadline = now + venue.settings.update_interval_s
            for sub in list(session.subs.values()):
                _push_sub(venue, session, sub, now_ms, now)
                assert sub.open_ms is not None
                closes = venue.clock.trio_time_at(close_time(sub.interval, sub.open_ms))
                deadline = min(deadline, closes)
        await session.peer.wait_room()
        await session.wait_wake(deadline)


def _push_sub(venue: Venue, session: Session, sub: Sub, now_ms: int, now: float) -> None:
    """Closing frames of candles that ended since the last visit, then a forming update."""
    current = floor_open(sub.interval, now_ms)
    if sub.open_ms is None:
        sub.open_ms = current
    stalled = venue.faults.symbol_stalled(sub.symbol) or not venue.faults.gate.is_open()
    behind = 0
    while sub.open_ms < current:
        behind += 1
        if behind > MAX_CATCH_UP:
            sub.open_ms = current
            break
        if not stalled and venue.market.exists(sub.symbol, sub.open_ms):
            bar = venue.market.final(sub.symbol, sub.interval, sub.open_ms)
            copies = venue.faults.final_copies(sub.symbol, sub.interval, sub.open_ms)
            frame = venue.kline_frame(session, sub, bar, True, now_ms)
            for _ in range(copies):
                session.send(frame)
                venue.stats["kline_final"] += 1
        sub.open_ms = next_open(sub.interval, sub.open_ms)
        sub.sent_trades = 0
    if stalled or now - sub.last_push < venue.settings.update_interval_s:
        return
    if not venue.market.exists(sub.symbol, current):
        return  # a halted market: no forming updates either
    bar = venue.market.candle(sub.symbol, sub.interval, current, now_ms)
    if bar.trades > sub.sent_trades:
        session.send(venue.kline_frame(session, sub, bar, False, now_ms))
        sub.sent_trades = bar.trades
        sub.last_push = now
        venue.stats["kline_forming"] += 1


async def _run_bench(venue: Venue, session: Session) -> None:
    """Forming (or, with ``bench_closed``, closed) frames round-robin over the session's
    streams, paced by the venue's pacer."""
    log = venue.send_log
    closed = venue.settings.bench_closed
    while True:
        subs = [s for s in session.subs.values() if not session.silent]
        if not subs or session.closing or not venue.faults.gate.is_open():
            await session.wait_wake(trio.current_time() + 0.05)
            continue
        await venue.pacer.take(len(subs))
        now_ms = venue.clock.now_ms()
        rows: list[tuple[str, int, str]] = []
        for sub in subs:
            open_ms = bench_open_ms(sub, now_ms, closed)
            spec = venue.market.spec(sub.symbol)
            sub.bench_seq += 1
            close = spec.base + sub.bench_seq % 1_000_000 * spec.tick
            # A plausible candle whose close encodes the frame's sequence number, so that
            # (symbol, open time, close) identifies the frame in the send log.
            seq = sub.bench_seq
            bar = Bar(
                symbol=sub.symbol, interval=sub.interval, open_ms=open_ms, open=spec.base,
                high=close, low=spec.base - spec.tick, close=close, volume=seq,
                quote=seq * spec.base, taker_volume=0, taker_quote=0, trades=seq, first_id=1,
                last_id=seq, last_trade_ms=now_ms,
            )  # fmt: skip
            session.send(venue.kline_frame(session, sub, bar, closed, now_ms))
            rows.append((sub.symbol, open_ms, spec.price(close)))
        # Stamped as the burst goes to the socket, not before it is built: the time to build
        # it is the simulator's, not the client's latency.
        if not session.closing:  # else nothing was queued: no send time to log
            session.peer.on_next_send(functools.partial(log.record_all, rows))
        venue.stats["bench_frames"] += len(subs)
        await session.peer.wait_room()
