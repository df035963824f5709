"""What every simulated venue shares: WebSocket session lifecycle, the kline pusher, truth,
REST dispatch with faults, and the ``/_sim/*`` control endpoints. Venues fill in the hooks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

import attrs
import orjson
import trio
import wsproto
import wsproto.events as wse

from feedd.intervals import HOUR_MS, MINUTE_MS, close_time, next_open
from feedd.sim.bench import Pacer, SendLog
from feedd.sim.faults import Faults, RestFault
from feedd.sim.history import MinuteText, minute_texts
from feedd.sim.market import Bar
from feedd.sim.pusher import run_pusher
from feedd.sim.rest import BadParam, Response, first_open_at_or_after, int_param, json_response
from feedd.sim.session import Session, Sub
from feedd.sim.settings import SimContext
from feedd.sim.wsserver import CLOSE_WAIT_S, WsPeer

#: ``/_sim/truth`` without ``start`` covers the day before ``end``
TRUTH_DEFAULT_SPAN_MS = 24 * 3600 * 1000
#: a truth query returns at most this many candles (the market is computed on demand)
TRUTH_MAX_ROWS = 100_000


@attrs.frozen(slots=True)
class TruthCandle:
    """A closed candle with its fields formatted exactly as the venue's REST sends them."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int | None


class Venue:
    """Base of the three venues; one instance serves one venue's WS and REST on one port."""

    name: ClassVar[str]
    #: canonical interval -> the venue's native name
    intervals: ClassVar[Mapping[str, str]]
    #: whether the venue's candles carry a trade count (only Binance's do)
    reports_trades: ClassVar[bool] = False

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.market = ctx.market
        self.stats: Counter[str] = Counter()
        self.faults = Faults(self, self.stats)
        self.faults.lifetime_s = ctx.settings.lifetime_s
        self.sessions: set[Session] = set()
        self.pacer = Pacer(ctx.settings.bench_rate)
        #: benchmark frames this venue sent (each venue its own: symbols repeat across venues)
        self.send_log = SendLog(ctx.settings.bench_log_size)
        self.ws_url = ""
        self.rest_url = ""
        self._connections = 0

    # ------------------------------------------------------------------ hooks

    def ws_accepts(self, path: str) -> bool:
        raise NotImplementedError

    def setup_session(self, session: Session) -> None:
        """Called once the WebSocket is open, before any task runs."""

    def handle_text(self, session: Session, text: str) -> None:
        raise NotImplementedError

    def on_inbound(self, session: Session) -> None:
        session.note_inbound()

    def kline_frame(self, session: Session, sub: Sub, bar: Bar, final: bool, now_ms: int) -> bytes:
        raise NotImplementedError

    async def run_keepalive(self, session: Session) -> None:
        await trio.sleep_forever()

    def expire(self, session: Session) -> None:
        """The connection reached its lifetime."""
        session.close_soon(1001, "connection lifetime exceeded")

    def handle_rest(self, path: str, query: dict[str, str]) -> Response:
        raise NotImplementedError

    def rest_fault_response(self, fault: RestFault) -> Response:
        raise NotImplementedError

    def bad_param_response(self, exc: BadParam) -> Response:
        raise NotImplementedError

    def truth_candle(self, bar: Bar) -> TruthCandle:
        """``bar`` formatted as this venue's REST sends it."""
        spec = self.market.spec(bar.symbol)
        return TruthCandle(
            bar.open_ms,
            spec.price(bar.open),
            spec.price(bar.high),
            spec.price(bar.low),
            spec.price(bar.close),
            spec.qty(bar.volume),
            spec.quote(bar.quote),
            bar.trades if self.reports_trades else None,
        )

    # ------------------------------------------------------------------ truth

    def first_open(self, interval: str) -> int:
        """The oldest candle that exists: the first one opening at or after the history start.

        Every symbol "lists" then, which bounds the work a long REST window can ask for.
        """
        return first_open_at_or_after(interval, self.market.history_start_ms)

    def truth(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[TruthCandle]:
        """Closed candles with open time in [start_ms, end_ms] and close time <= sim now
        (the first ``TRUTH_MAX_ROWS`` of them)."""
        if interval not in self.intervals:
            raise ValueError(f"{self.name} does not offer interval {interval!r}")
        now = self.clock.now_ms()
        out: list[TruthCandle] = []
        t = max(first_open_at_or_after(interval, start_ms), self.first_open(interval))
        trades = self.reports_trades
        while t <= end_ms and close_time(interval, t) <= now and len(out) < TRUTH_MAX_ROWS:
            deep = None
            if interval == "1m" and t % HOUR_MS == 0 and t + HOUR_MS - 1 <= end_ms:
                deep = self.deep_minutes(symbol, t, taker=False)
            if deep is not None and len(out) + 60 <= TRUTH_MAX_ROWS:
                out += [
                    TruthCandle(m, o, h, lo, c, v, q, n if trades else None)
                    for m, (o, h, lo, c, v, q, n, _, _) in deep
                ]
                t += HOUR_MS
                continue
            if self.market.exists(symbol, t):
                out.append(self.truth_candle(self.market.final(symbol, interval, t)))
            t = next_open(interval, t)
        return out

    def deep_minutes(
        self, symbol: str, hour_ms: int, *, taker: bool = True
    ) -> list[tuple[int, MinuteText]] | None:
        """The existing 1m candles of a deep-history hour with their open times, formatted as
        ``truth_candle`` does (None outside the deep history): months of them in seconds."""
        draws = self.market.deep_hour(symbol, hour_ms)
        if draws is None:
            return None
        texts = minute_texts(self.market.spec(symbol), draws, taker=taker)
        opens = range(hour_ms, hour_ms + HOUR_MS, MINUTE_MS)
        if symbol not in self.market.holes:
            return list(zip(opens, texts, strict=True))
        exists = self.market.exists
        return [(t, text) for t, text in zip(opens, texts, strict=True) if exists(symbol, t)]

    # ------------------------------------------------------------------ fault target

    def abort_all(self) -> int:
        sessions = list(self.sessions)
        for session in sessions:
            session.abort()
        return len(sessions)

    def close_all(self, code: int, reason: str) -> int:
        for session in self.sessions:
            session.close_soon(code, reason)
        return len(self.sessions)

    def announce_close_all(self, after_s: float) -> int:
        for session in self.sessions:
            session.close_soon(1001, "service upgrade", after_s)
        return len(self.sessions)

    def send_all_nowait(self, payload: bytes) -> int:
        for session in self.sessions:
            session.send(payload)
        self.stats["garbage"] += len(self.sessions)
        return len(self.sessions)

    def new_conn_id(self) -> str:
        self._connections += 1
        key = f"{self.ctx.settings.seed}:{self.name}:{self._connections}".encode()
        return hashlib.blake2b(key, digest_size=10).hexdigest()

    # ------------------------------------------------------------------ HTTP

    def handle_http(self, method: str, target: str, body: bytes) -> Response:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if parts.path.startswith("/_sim/"):
            return self._control(method, parts.path, query, body)
        self.stats["rest_requests"] += 1
        fault = self.faults.next_rest_fault(parts.path)
        if fault is not None:
            self.stats["rest_faults"] += 1
            return self.rest_fault_response(fault)
        try:
            return self.handle_rest(parts.path, query)
        except BadParam as exc:
            return self.bad_param_response(exc)

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> Response:
        try:
            if path == "/_sim/time":
                return json_response(
                    {
                        "sim_ms": self.clock.now_ms(),
                        "start_ms": self.clock.start_ms,
                        "speed": self.clock.speed,
                    }
                )
            if path == "/_sim/truth":
                end = int_param(query, "end", self.clock.now_ms())
                assert end is not None
                start = int_param(query, "start", end - TRUTH_DEFAULT_SPAN_MS)
                assert start is not None
                rows = self.truth(query.get("symbol", ""), query.get("interval", ""), start, end)
                return json_response([attrs.asdict(r) for r in rows])
            if path == "/_sim/stats":
                return json_response({**self.stats, "sessions": len(self.sessions)})
            if path == "/_sim/sendlog":
                after = int_param(query, "after", 0)
                next_index, logged = self.send_log.since(after or 0)
                return json_response({"next": next_index, "rows": logged})
            if path == "/_sim/fault" and method == "POST":
                result = self.faults.apply(orjson.loads(body))
                return json_response({"ok": True, "result": result})
        except (ValueError, TypeError, BadParam, orjson.JSONDecodeError) as exc:
            return json_response({"ok": False, "error": str(exc)}, 400)
        return json_response({"ok": False, "error": f"no such control {method} {path}"}, 404)

    # ------------------------------------------------------------------ WebSocket lifecycle

    async def serve_ws(
        self,
        stream: trio.SocketStream,
        target: str,
        headers: list[tuple[bytes, bytes]],
        trailing: bytes,
    ) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        ws.initiate_upgrade_connection(headers, target)
        for _ in ws.events():
            pass  # the Request event: nothing in it changes our answer
        await stream.send_all(ws.send(wse.AcceptConnection()))
        peer = WsPeer(stream, ws, self.faults.gate)
        if trailing:
            peer.feed(trailing)
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        session = Session(peer, parts.path, query, self.new_conn_id(), self.stats)
        self.sessions.add(session)
        self.stats["ws_connections"] += 1
        try:
            with session.scope, _client_gone_is_fine():
                async with trio.open_nursery() as nursery:
                    session.nursery = nursery
                    nursery.start_soon(peer.run_writer)
                    self.setup_session(session)
                    nursery.start_soon(run_pusher, self, session)
                    nursery.start_soon(self.run_keepalive, session)
                    nursery.start_soon(self._run_lifetime, session)
                    await self._run_reader(session)
                    with trio.move_on_after(CLOSE_WAIT_S):
                        await peer.flush()
                    nursery.cancel_scope.cancel()
        finally:
            self.sessions.discard(session)
            self.stats["ws_aborted" if session.aborted else "ws_closed"] += 1

    async def _run_reader(self, session: Session) -> None:
        while True:
            events = await session.peer.receive()
            if not events:
                return
            for event in events:
                if isinstance(event, wse.CloseConnection):
                    return
                self.on_inbound(session)
                if isinstance(event, wse.Pong):
                    session.last_pong = trio.current_time()
                elif isinstance(event, wse.TextMessage):
                    self.handle_text(session, event.data)
            session.wake()

    async def _run_lifetime(self, session: Session) -> None:
        # Polled so that a lifetime set by a fault also reaches connections already open.
        while True:
            lifetime = self.faults.lifetime_s
            now = trio.current_time()
            if lifetime is not None and now >= session.opened_at + lifetime:
                self.expire(session)
                return
            wait = 1.0 if lifetime is None else session.opened_at + lifetime - now
            await trio.sleep(min(1.0, wait))


@contextlib.contextmanager
def _client_gone_is_fine() -> Iterator[None]:
    """A client that resets its connection ends its session, never the server."""
    try:
        yield
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass
