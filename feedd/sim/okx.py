"""Simulated OKX v5 SWAP: candles on ``/ws/v5/business`` (``/public`` answers 60018), text
ping/pong, per-arg acks, the 4004 idle close and 64008 notice, and ``/api/v5`` REST.

Protocol facts: PROTOCOLS.md section 3.
"""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar

import orjson
import trio

from feedd.intervals import close_time, floor_open
from feedd.sim.faults import RestFault
from feedd.sim.instruments import okx_instruments
from feedd.sim.market import Bar
from feedd.sim.rest import (
    BadParam,
    Response,
    first_open_at_or_after,
    int_param,
    json_response,
    limit_param,
    opens_backward,
)
from feedd.sim.session import Session, Sub
from feedd.sim.venue import Venue

_BARS = {
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1H",
    "2h": "2H",
    "4h": "4H",
    "6h": "6Hutc",
    "12h": "12Hutc",
    "1d": "1Dutc",
    "3d": "3Dutc",
    "1w": "1Wutc",
    "1M": "1Mutc",
}
_CANONICAL = {native: canonical for canonical, native in _BARS.items()}
_INST = re.compile(r"([A-Z0-9]+)-USDT-SWAP")
#: ``candles`` serves only this many most recent bars; older ones are ``history-candles`` only
RECENT_BARS = 1440
NOTICE_64008 = "The connection will soon be closed for a service upgrade. Please reconnect."


def _wrong_url(channel: object, inst_id: object) -> str:
    return (
        f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use the "
        "correct URL, channel and parameters referring to API document."
    )


class OkxVenue(Venue):
    name: ClassVar[str] = "okx_futures"
    intervals = _BARS

    def symbol_of(self, inst_id: object) -> str | None:
        match = _INST.fullmatch(inst_id) if isinstance(inst_id, str) else None
        symbol = match.group(1) + "USDT" if match else None
        return symbol if symbol is not None and self.market.listed(symbol) else None

    # ------------------------------------------------------------------ WebSocket

    def ws_accepts(self, path: str) -> bool:
        return path in ("/ws/v5/business", "/ws/v5/public")

    def _event(self, session: Session, request_id: object, event: str, **fields: Any) -> None:
        frame: dict[str, Any] = {} if request_id is None else {"id": request_id}
        frame["event"] = event
        frame.update(fields)
        frame["connId"] = session.conn_id
        self.stats["errors" if event == "error" else "acks"] += 1
        session.send(orjson.dumps(frame))

    def handle_text(self, session: Session, text: str) -> None:
        if text == "ping":
            session.send(b"pong")
            return
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self._event(session, None, "error", code="60012", msg=f"Illegal request: {text}")
            return
        request_id = message.get("id")
        op = message.get("op")
        if op not in ("subscribe", "unsubscribe"):
            self._event(session, request_id, "error", code="60012", msg=f"Illegal request: {text}")
            return
        if session.note_request(3600.0) > self.settings.okx_requests_per_hour:
            self._event(session, request_id, "error", code="60014", msg="Requests too frequent.")
            return
        args = message.get("args")
        if not isinstance(args, list) or not args:
            self._event(session, request_id, "error", code="60013", msg="Invalid args")
            return
        for arg in args:
            self._one_arg(session, request_id, op, arg)

    def _one_arg(self, session: Session, request_id: object, op: str, arg: object) -> None:
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            self._event(session, request_id, "error", code="60013", msg=f"Invalid args: {arg}")
            return
        channel, inst_id = arg["channel"], arg.get("instId")
        symbol = self.symbol_of(inst_id)
        interval = (
            _CANONICAL.get(channel.removeprefix("candle")) if channel.startswith("candle") else None
        )
        if (
            session.path != "/ws/v5/business"
            or interval is None
            or symbol is None
            or symbol in self.faults.rejected
        ):
            self._event(
                session, request_id, "error", code="60018", msg=_wrong_url(channel, inst_id)
            )
            return
        key = f"{channel}:{inst_id}"
        echo = {"channel": channel, "instId": inst_id}
        if op == "subscribe":
            if key not in session.subs:
                session.subs[key] = Sub(key, symbol, interval)
                self.stats["subscriptions"] += 1
        else:
            session.subs.pop(key, None)
        self._event(session, request_id, op, arg=echo)

    async def run_keepalive(self, session: Session) -> None:
        """Close with 4004 after ``okx_idle_s`` with nothing sent (no subscription, no data)."""
        idle = self.settings.okx_idle_s
        while True:
            quiet_since = max(session.peer.last_sent, session.opened_at)
            if trio.current_time() >= quiet_since + idle:
                self.stats["idle_closes"] += 1
                session.close_soon(4004, f"No data received in {idle:g}s.")
                return
            await trio.sleep_until(quiet_since + idle)

    def _notice(self, session: Session) -> None:
        frame = {"event": "notice", "code": "64008", "msg": NOTICE_64008, "connId": session.conn_id}
        self.stats["notices"] += 1
        session.send(orjson.dumps(frame))

    def expire(self, session: Session) -> None:
        self._notice(session)
        session.close_soon(1001, "service upgrade", self.faults.notice_lead_s)

    def announce_close_all(self, after_s: float) -> int:
        for session in self.sessions:
            self._notice(session)
            session.close_soon(1001, "service upgrade", after_s)
        return len(self.sessions)

    def kline_frame(self, session: Session, sub: Sub, bar: Bar, final: bool, now_ms: int) -> bytes:
        inst_id = sub.topic.split(":", 1)[1]
        row = self._row(bar, final)
        return b'{"arg":{"channel":"candle%s","instId":"%s"},"data":[%s]}' % (
            _BARS[sub.interval].encode(),
            inst_id.encode(),
            orjson.dumps(row),
        )

    # ------------------------------------------------------------------ REST

    def _row(self, bar: Bar, confirmed: bool) -> list[str]:
        c = self.truth_candle(bar)
        contracts = self.market.spec(bar.symbol).contracts(bar.volume)
        return [
            str(c.open_time),
            c.open,
            c.high,
            c.low,
            c.close,
            contracts,
            c.volume,
            c.quote_volume,
            "1" if confirmed else "0",
        ]

    @staticmethod
    def _result(data: list[Any], code: str = "0", msg: str = "", status: int = 200) -> Response:
        return json_response({"code": code, "msg": msg, "data": data}, status)

    def handle_rest(self, path: str, query: dict[str, str]) -> Response:
        if path == "/api/v5/public/time":
            return self._result([{"ts": str(self.clock.now_ms())}])
        if path == "/api/v5/market/candles":
            return self._candles(query, 300, recent_only=True)
        if path == "/api/v5/market/history-candles":
            return self._candles(query, 100, recent_only=False)
        if path == "/api/v5/public/instruments":
            inst_type = query.get("instType") or ""
            if not inst_type:
                return self._result([], "50014", "Parameter instType can not be empty.")
            rows = okx_instruments(self.market, self.settings.universe_size)
            if inst_type != "SWAP":
                rows = []
            if query.get("instId"):
                rows = [r for r in rows if r["instId"] == query["instId"]]
            return self._result(rows)
        return self._result([], "404", "Not Found", 404)

    def _candles(self, query: dict[str, str], max_limit: int, recent_only: bool) -> Response:
        inst_id = query.get("instId") or ""
        if not inst_id:
            return self._result([], "50014", "Parameter instId can not be empty.")
        symbol = self.symbol_of(inst_id)
        if symbol is None:
            return self._result([], "51001", "Instrument ID does not exist.")
        interval = _CANONICAL.get(query.get("bar") or "1m")
        if interval is None:
            return self._result([], "51000", "Parameter bar error")
        limit = limit_param(query, "limit", 100, max_limit)
        after, before = int_param(query, "after"), int_param(query, "before")
        now = self.clock.now_ms()
        current = floor_open(interval, now)
        last = current if after is None else min(current, floor_open(interval, after - 1))
        first = self.first_open(interval)
        if before is not None:
            first = max(first, first_open_at_or_after(interval, before + 1))
        if recent_only:
            first = max(first, opens_backward(interval, 0, current, RECENT_BARS)[-1])
        # Newest `limit` rows inside (before, after): `before` alone yields the latest rows.
        opens = opens_backward(
            interval, first, last, limit, functools.partial(self.market.exists, symbol)
        )
        rows = [
            self._row(self.market.candle(symbol, interval, t, now), close_time(interval, t) <= now)
            for t in opens
        ]
        return self._result(rows)

    def rest_fault_response(self, fault: RestFault) -> Response:
        if fault.kind == "throttle":
            return self._result([], "50011", "Too Many Requests", 429)
        return self._result(
            [],
            "50001",
            "Service temporarily unavailable. Please try again later.",
            fault.status or 200,
        )

    def bad_param_response(self, exc: BadParam) -> Response:
        return self._result([], "51000", f"Parameter {exc.name} error")
