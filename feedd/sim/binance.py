"""Simulated Binance USD-M futures: routed ``/market`` WebSocket (raw and combined), the
legacy root that acks and stays silent, SUBSCRIBE and friends, and server ping frames.

Protocol facts: PROTOCOLS.md sections 1.1-1.4; the REST half is in ``binance_rest``.
"""

from __future__ import annotations

import re
from typing import ClassVar

import orjson
import trio

from feedd.sim.binance_rest import BinanceRest
from feedd.sim.market import Bar
from feedd.sim.session import Session, Sub

# The symbol lowercased: ``btcusdt``, or a Han name as listed (``币安人生usdt``, no case).
_STREAM = re.compile(r"([^\W_]+)@kline_(1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)")
_KLINE = (
    '{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s","i":"%s","f":%d,"L":%d,'
    '"o":"%s","c":"%s","h":"%s","l":"%s","v":"%s","n":%d,"x":%s,"q":"%s","V":"%s","Q":"%s",'
    '"B":"0"}}'
)


class BinanceVenue(BinanceRest):
    name: ClassVar[str] = "binance_futures"

    # ------------------------------------------------------------------ WebSocket

    def ws_accepts(self, path: str) -> bool:
        return path in ("/market/ws", "/market/stream", "/ws", "/stream") or path.startswith(
            ("/market/ws/", "/ws/")
        )

    def setup_session(self, session: Session) -> None:
        path = session.path
        session.combined = path.endswith("/stream")
        # Legacy unrouted URLs: handshake and acks work, klines never arrive (the 2026 trap).
        session.silent = not path.startswith("/market/")
        names: list[str] = []
        if session.combined:
            names = session.query.get("streams", "").split("/")
        else:
            for prefix in ("/market/ws/", "/ws/"):
                if path.startswith(prefix):
                    names = path[len(prefix) :].split("/")
        for name in names[: self.settings.max_streams]:
            sub = self._parse_stream(name)
            if sub is not None:
                session.subs[name] = sub
                self.stats["subscriptions"] += 1

    def _parse_stream(self, name: str) -> Sub | None:
        match = _STREAM.fullmatch(name)
        if match is None:
            return None
        symbol = match.group(1).upper()
        if (
            symbol.lower() != match.group(1)  # an upper-case stream name is not one
            or not self.market.listed(symbol)
            or symbol in self.faults.rejected
        ):
            return None
        return Sub(name, symbol, match.group(2))

    def on_inbound(self, session: Session) -> None:
        count = session.note_inbound()
        limit = self.settings.max_inbound_per_s
        if limit and count > limit:
            self.stats["rate_limit_drops"] += 1
            session.abort()

    def _error(self, session: Session, code: int, msg: str, request_id: object) -> None:
        self.stats["errors"] += 1
        session.send(orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id}))

    def _result(self, session: Session, result: object, request_id: int) -> None:
        session.send(orjson.dumps({"result": result, "id": request_id}))

    def handle_text(self, session: Session, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._error(session, 3, f"Invalid JSON: {exc}", None)
            return
        if not isinstance(message, dict):
            self._error(session, 2, "Invalid request: expected a JSON object", None)
            return
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
            self._error(session, 2, "Invalid request: request ID must be an unsigned integer", None)
            return
        method = message.get("method")
        params = message.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                self._error(
                    session, 2, "Invalid request: params must be a list of strings", request_id
                )
            elif method == "SUBSCRIBE":
                self._subscribe(session, params, request_id)
            else:
                for name in params:
                    session.subs.pop(name, None)
                self._result(session, None, request_id)
        elif method == "LIST_SUBSCRIPTIONS":
            self._result(session, list(session.subs), request_id)
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            self._property(session, method, params, request_id)
        elif method is None:
            self._error(session, 2, "Invalid request: missing field `method`", request_id)
        else:
            self._error(
                session,
                2,
                f"Invalid request: unknown variant `{method}`, expected one "
                "of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, "
                "`GET_PROPERTY`",
                request_id,
            )

    def _subscribe(self, session: Session, names: list[str], request_id: int) -> None:
        subs = {name: self._parse_stream(name) for name in names}
        bad = [name for name, sub in subs.items() if sub is None]
        if bad:
            # The whole request fails: nothing in it is subscribed.
            self._error(session, 2, f"Invalid request: invalid stream name {bad[0]}", request_id)
            return
        new = [name for name in subs if name not in session.subs]
        if len(session.subs) + len(new) > self.settings.max_streams:
            self._error(
                session,
                2,
                f"Invalid request: too many streams, at most "
                f"{self.settings.max_streams} per connection",
                request_id,
            )
            return
        for name in new:
            sub = subs[name]
            assert sub is not None
            session.subs[name] = sub
        self.stats["subscriptions"] += len(new)
        self.stats["acks"] += 1
        self._result(session, None, request_id)

    def _property(self, session: Session, method: str, params: object, request_id: int) -> None:
        if not isinstance(params, list) or not params or params[0] != "combined":
            self._error(session, 0, "Unknown property", request_id)
        elif method == "GET_PROPERTY":
            self._result(session, session.combined, request_id)
        elif len(params) != 2 or not isinstance(params[1], bool):
            self._error(session, 1, "Invalid value type: expected Boolean", request_id)
        else:
            session.combined = params[1]
            self._result(session, None, request_id)

    async def run_keepalive(self, session: Session) -> None:
        """Server pings; no pong for ``pong_timeout_s`` drops the connection."""
        while True:
            await trio.sleep(self.settings.ping_interval_s)
            if not self.faults.gate.is_open():
                session.last_pong = trio.current_time()  # a frozen server checks nothing
                continue
            if trio.current_time() - session.last_pong > self.settings.pong_timeout_s:
                self.stats["pong_timeouts"] += 1
                session.abort()
                return
            session.peer.send_ping_nowait(str(self.clock.now_ms()).encode())
            self.stats["pings"] += 1

    def kline_frame(self, session: Session, sub: Sub, bar: Bar, final: bool, now_ms: int) -> bytes:
        spec = self.market.spec(sub.symbol)
        price = spec.price
        payload = _KLINE % (
            now_ms,
            sub.symbol,
            bar.open_ms,
            bar.close_ms - 1,
            sub.symbol,
            sub.interval,
            bar.first_id,
            bar.last_id,
            price(bar.open),
            price(bar.close),
            price(bar.high),
            price(bar.low),
            spec.qty(bar.volume),
            bar.trades,
            "true" if final else "false",
            spec.quote(bar.quote),
            spec.qty(bar.taker_volume),
            spec.quote(bar.taker_quote),
        )
        if session.combined:
            payload = f'{{"stream":"{sub.topic}","data":{payload}}}'
        return payload.encode()
