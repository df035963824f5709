"""Simulated Bybit v5 linear: ``/v5/public/linear`` WebSocket with JSON ping/pong and
all-or-nothing subscribe requests, and ``/v5/market`` REST (newest first, errors in HTTP 200).

Protocol facts: PROTOCOLS.md section 2.
"""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar
from urllib.parse import quote

import attrs
import orjson
import trio

from feedd.intervals import floor_open
from feedd.sim.faults import RestFault
from feedd.sim.instruments import bybit_instruments
from feedd.sim.market import Bar
from feedd.sim.rest import (
    BadParam,
    Response,
    first_open_at_or_after,
    int_param,
    json_response,
    limit_param,
    opens_backward,
    opens_forward,
    text_response,
)
from feedd.sim.session import Session, Sub
from feedd.sim.venue import Venue

MAX_ARGS_CHARS = 21_000
_INTERVALS = {
    "1m": "1",
    "3m": "3",
    "5m": "5",
    "15m": "15",
    "30m": "30",
    "1h": "60",
    "2h": "120",
    "4h": "240",
    "6h": "360",
    "12h": "720",
    "1d": "D",
    "1w": "W",
    "1M": "M",
}
_CANONICAL = {native: canonical for canonical, native in _INTERVALS.items()}
_TOPIC = re.compile(r"kline\.(1|3|5|15|30|60|120|240|360|720|D|W|M)\.([A-Z0-9]+)")
_KLINE = (
    '{"topic":"%s","data":[{"start":%d,"end":%d,"interval":"%s","open":"%s","close":"%s",'
    '"high":"%s","low":"%s","volume":"%s","turnover":"%s","confirm":%s,"timestamp":%d}],'
    '"ts":%d,"type":"snapshot"}'
)


class BybitVenue(Venue):
    name: ClassVar[str] = "bybit_futures"
    intervals = _INTERVALS

    # ------------------------------------------------------------------ WebSocket

    def ws_accepts(self, path: str) -> bool:
        return path == "/v5/public/linear"

    def on_inbound(self, session: Session) -> None:
        pass  # only pings (and data) keep a Bybit socket alive; see run_keepalive

    def _reply(self, session: Session, message: dict[str, Any], ok: bool, ret_msg: str) -> None:
        reply: dict[str, Any] = {"success": ok, "ret_msg": ret_msg, "conn_id": session.conn_id}
        if "req_id" in message:
            reply["req_id"] = message["req_id"]
        reply["op"] = message.get("op", "")
        self.stats["acks" if ok else "errors"] += 1
        session.send(orjson.dumps(reply))

    def handle_text(self, session: Session, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self._reply(session, {}, False, "error:request is not a json object")
            return
        op = message.get("op")
        if op == "ping":
            session.last_heard = trio.current_time()
            self._reply(session, message, True, "pong")
        elif op in ("subscribe", "unsubscribe"):
            args = message.get("args")
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                self._reply(session, message, False, "error:args must be a list of topics")
            elif len(orjson.dumps(args)) > MAX_ARGS_CHARS:
                self._reply(
                    session,
                    message,
                    False,
                    f"error:args length exceeds {MAX_ARGS_CHARS} characters",
                )
            elif op == "subscribe":
                self._subscribe(session, message, args)
            else:
                for topic in args:
                    session.subs.pop(topic, None)
                self._reply(session, message, True, "")
        else:
            self._reply(session, message, False, "error:invalid op")

    def _subscribe(self, session: Session, message: dict[str, Any], topics: list[str]) -> None:
        subs: dict[str, Sub] = {}
        for topic in topics:
            match = _TOPIC.fullmatch(topic)
            symbol = match.group(2) if match else ""
            if match is None or not self.market.listed(symbol) or symbol in self.faults.rejected:
                # One bad topic fails the whole request: nothing in it is subscribed.
                self._reply(session, message, False, f"error:handler not found,topic:{topic}")
                return
            if topic in session.subs or topic in subs:
                self._reply(session, message, False, f"error:already subscribed,topic:{topic}")
                return
            subs[topic] = Sub(topic, symbol, _CANONICAL[match.group(1)])
        session.subs.update(subs)
        self.stats["subscriptions"] += len(subs)
        self._reply(session, message, True, "")

    async def run_keepalive(self, session: Session) -> None:
        """Cut the connection after ``bybit_idle_s`` with neither a ping nor data."""
        idle = self.settings.bybit_idle_s
        while True:
            quiet_since = max(session.last_heard, session.peer.last_sent)
            if trio.current_time() >= quiet_since + idle:
                self.stats["idle_closes"] += 1
                session.close_soon(1000, "idle timeout")
                return
            await trio.sleep_until(quiet_since + idle)

    def kline_frame(self, session: Session, sub: Sub, bar: Bar, final: bool, now_ms: int) -> bytes:
        spec = self.market.spec(sub.symbol)
        price = spec.price
        return (
            _KLINE
            % (
                sub.topic,
                bar.open_ms,
                bar.close_ms - 1,
                _INTERVALS[sub.interval],
                price(bar.open),
                price(bar.close),
                price(bar.high),
                price(bar.low),
                spec.qty(bar.volume),
                spec.quote(bar.quote),
                "true" if final else "false",
                bar.last_trade_ms or now_ms,
                now_ms,
            )
        ).encode()

    # ------------------------------------------------------------------ REST

    def _envelope(self, result: object, code: int = 0, msg: str = "OK") -> Response:
        return json_response(
            {
                "retCode": code,
                "retMsg": msg,
                "result": result,
                "retExtInfo": {},
                "time": self.clock.now_ms(),
            }
        )

    def handle_rest(self, path: str, query: dict[str, str]) -> Response:
        if path == "/v5/market/time":
            now = self.clock.now_ms()
            return self._envelope(
                {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
            )
        if path == "/v5/market/kline":
            return self._klines(query)
        if path == "/v5/market/instruments-info":
            return self._instruments(query)
        return json_response({"retCode": 404, "retMsg": "Not Found"}, 404)

    def _klines(self, query: dict[str, str]) -> Response:
        if query.get("category", "linear") != "linear":
            return self._envelope({}, 10001, "params error: only category linear is simulated")
        symbol = query.get("symbol") or ""
        if not symbol:
            raise BadParam("symbol", "missing")
        # Bybit lists no symbol outside [A-Z0-9] (the simulated Binance lists a Han one).
        if not self.market.listed(symbol) or not symbol.isascii():
            return self._envelope({}, 10001, "Not supported symbols")
        native = query.get("interval") or ""
        if native not in _CANONICAL:
            return self._envelope({}, 10001, "Invalid period!")
        interval = _CANONICAL[native]
        limit = limit_param(query, "limit", 200, 1000)
        start, end = int_param(query, "start"), int_param(query, "end")
        now = self.clock.now_ms()
        current = floor_open(interval, now)
        last = current if end is None else min(current, floor_open(interval, end))
        first = self.first_open(interval)
        if start is not None:
            first = max(first, first_open_at_or_after(interval, start))
        exists = functools.partial(self.market.exists, symbol)
        if start is not None and end is None:
            # Start alone: the window just after start (a user report), still newest first.
            opens = opens_forward(interval, first, last, limit, exists)[::-1]
        else:
            opens = opens_backward(interval, first, last, limit, exists)
        rows = []
        for t in opens:
            c = self.truth_candle(self.market.candle(symbol, interval, t, now))
            rows.append([str(t), c.open, c.high, c.low, c.close, c.volume, c.quote_volume])
        return self._envelope({"category": "linear", "symbol": symbol, "list": rows})

    def _instruments(self, query: dict[str, str]) -> Response:
        if query.get("category") != "linear":
            return self._envelope({}, 10001, "params error: category is required (linear)")
        limit = limit_param(query, "limit", 500, 1000)
        rows = bybit_instruments(self.market, self.settings.universe_size)
        if query.get("symbol"):
            rows = [r for r in rows if r["symbol"] == query["symbol"]]
        if query.get("status", "Trading") != "Trading":
            rows = []
        offset = _cursor_offset(query.get("cursor") or "", rows)
        if offset is None:
            return self._envelope({}, 10001, "params error: invalid cursor")
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return self._envelope(
            {
                "category": "linear",
                "list": page,
                "nextPageCursor": _cursor(page) if more else "",
            }
        )

    def rest_fault_response(self, fault: RestFault) -> Response:
        if fault.kind == "throttle":
            if fault.status == 200:
                return self._envelope({}, 10006, "Too many visits!")
            return text_response("access too frequent", 403)
        response = self._envelope({}, 10016, "Internal server error.")
        return attrs.evolve(response, status=fault.status or 200)

    def bad_param_response(self, exc: BadParam) -> Response:
        return self._envelope({}, 10001, f"params error: {exc.name} {exc.problem}")


def _cursor(page: list[dict[str, Any]]) -> str:
    """Bybit's cursor names the page's first and last symbols, percent-encoded in the JSON
    (``first%3DBTCUSDT%26last%3DETHUSDT``): a client sends it back as given."""
    return quote(f"first={page[0]['symbol']}&last={page[-1]['symbol']}", safe="")


def _cursor_offset(cursor: str, rows: list[dict[str, Any]]) -> int | None:
    """Where the page after ``cursor`` starts; None for a cursor Bybit never gave.

    The query string was decoded once, like any server does, so a cursor sent as given reads
    ``first=…&last=…`` here; one encoded twice still reads ``first%3D…`` and is refused.
    """
    if not cursor:
        return 0
    fields = dict(part.split("=", 1) for part in cursor.split("&") if "=" in part)
    last = fields.get("last")
    for index, row in enumerate(rows):
        if row["symbol"] == last and "first" in fields:
            return index + 1
    return None
