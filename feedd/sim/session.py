"""One client WebSocket connection on a venue: its subscriptions, pacing state and lifecycle.

Venues read and change a session from their reader and pusher tasks; faults reach it from
outside through ``abort``, ``close_soon`` and ``send``.
"""

from __future__ import annotations

from collections import Counter, deque

import attrs
import trio
from trio.lowlevel import ParkingLot

from feedd.sim.wsserver import CLOSE_WAIT_S, WsPeer


@attrs.define(eq=False)
class Sub:
    """One subscribed stream and what has been pushed for it."""

    topic: str
    symbol: str
    interval: str
    #: open time of the candle the pusher is on (None until the first push)
    open_ms: int | None = None
    #: trades already reported for that candle (a forming frame goes out when this grows)
    sent_trades: int = 0
    last_push: float = float("-inf")
    bench_seq: int = 0


class Session:
    """A connection's state; identity equality (it is a stateful object, not a value)."""

    def __init__(
        self, peer: WsPeer, path: str, query: dict[str, str], conn_id: str, stats: Counter[str]
    ) -> None:
        self.peer = peer
        self.stats = stats
        self.path = path
        self.query = query
        self.conn_id = conn_id
        self.subs: dict[str, Sub] = {}
        #: Binance: wrap payloads as {"stream":…,"data":…}
        self.combined = False
        #: Binance legacy root: acks subscriptions but never pushes klines
        self.silent = False
        self.opened_at = trio.current_time()
        #: trio time of the client's last sign of life (Bybit ping, any frame)
        self.last_heard = self.opened_at
        #: trio time of the client's last pong frame (Binance answers our pings)
        self.last_pong = self.opened_at
        #: trio times of recent inbound messages / subscribe requests (rate limits)
        self.inbound: deque[float] = deque()
        self.requests: deque[float] = deque()
        self.closing = False
        self.aborted = False
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self._wake = ParkingLot()

    # ------------------------------------------------------------------ pusher wakeups

    def wake(self) -> None:
        self._wake.unpark_all()

    async def wait_wake(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._wake.park()

    # ------------------------------------------------------------------ sending

    def send(self, payload: bytes | str) -> None:
        if not self.closing:
            self.stats["frames"] += 1
            self.peer.send_text_nowait(payload)

    # ------------------------------------------------------------------ ending

    def abort(self) -> None:
        """Drop the TCP connection with a reset and no close frame."""
        self.aborted = True
        self.closing = True
        self.peer.abort()
        self.scope.cancel()

    def close_soon(self, code: int, reason: str, after_s: float = 0.0) -> None:
        if self.nursery is not None and not self.closing:
            self.nursery.start_soon(self.close, code, reason, after_s)

    async def close(self, code: int, reason: str, after_s: float = 0.0) -> None:
        """Send a close frame (after ``after_s``), wait briefly for the client's, then end."""
        if after_s > 0:
            await trio.sleep(after_s)
        if self.closing:
            return
        self.closing = True
        self.peer.send_close_nowait(code, reason)
        with trio.move_on_after(CLOSE_WAIT_S):
            await self.peer.flush()
            await self.peer.remote_closed.wait()
        self.scope.cancel()

    def note_inbound(self, window_s: float = 1.0) -> int:
        """Record one inbound message; returns how many arrived in the last ``window_s``."""
        now = trio.current_time()
        self.last_heard = now
        self.inbound.append(now)
        while self.inbound and self.inbound[0] <= now - window_s:
            self.inbound.popleft()
        return len(self.inbound)

    def note_request(self, window_s: float) -> int:
        """Record one subscribe/unsubscribe request; returns the count within ``window_s``."""
        now = trio.current_time()
        self.requests.append(now)
        while self.requests and self.requests[0] <= now - window_s:
            self.requests.popleft()
        return len(self.requests)
