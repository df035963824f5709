"""Simulated Binance USD-M REST (``/fapi/v1``): klines oldest first, time, exchangeInfo, the
per-minute request weight with ``X-MBX-USED-WEIGHT-1M``, and HTTP 4xx error bodies; the bulk
archive (``feedd.sim.archive``) under ``/archive``.

Protocol facts: PROTOCOLS.md sections 1.6 and 1.7.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

from feedd.intervals import floor_open
from feedd.sim.archive import PREFIX as ARCHIVE_PREFIX
from feedd.sim.archive import SimArchive
from feedd.sim.faults import RestFault
from feedd.sim.instruments import binance_symbols
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
)
from feedd.sim.venue import Venue

_INTERVALS = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)


def _kline_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class BinanceRest(Venue):
    reports_trades: ClassVar[bool] = True
    """The REST half of the Binance venue; ``BinanceVenue`` adds the WebSocket half."""

    intervals = {i: i for i in _INTERVALS}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._weight_minute = -1
        self._weight_used = 0
        self.archive = SimArchive(self)

    @property
    def archive_url(self) -> str:
        """The base URL of this venue's bulk archive (feedd's ``archive_url``)."""
        return self.rest_url + ARCHIVE_PREFIX

    def kline_row(self, bar: Bar) -> list[Any]:
        """``bar`` as a ``/fapi/v1/klines`` row (and an archive CSV line)."""
        t = self.truth_candle(bar)
        spec = self.market.spec(bar.symbol)
        return [
            t.open_time,
            t.open,
            t.high,
            t.low,
            t.close,
            t.volume,
            bar.close_ms - 1,
            t.quote_volume,
            bar.trades,
            spec.qty(bar.taker_volume),
            spec.quote(bar.taker_quote),
            "0",
        ]

    def _use_weight(self, weight: int) -> tuple[bool, tuple[tuple[str, str], ...]]:
        now = self.clock.now_ms()
        minute = now // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        if self._weight_used + weight > self.settings.rest_weight_per_minute:
            retry = math.ceil(self.clock.real_seconds((minute + 1) * 60_000 - now))
            headers = (
                ("X-MBX-USED-WEIGHT-1M", str(self._weight_used)),
                ("Retry-After", str(max(1, retry))),
            )
            return False, headers
        self._weight_used += weight
        return True, (("X-MBX-USED-WEIGHT-1M", str(self._weight_used)),)

    def handle_rest(self, path: str, query: dict[str, str]) -> Response:
        if path.startswith(ARCHIVE_PREFIX + "/"):
            return self.archive.respond(path)  # a static file host: no request weight
        weight = 1
        if path == "/fapi/v1/klines":
            weight = _kline_weight(limit_param(query, "limit", 500, 1500))
        elif path not in ("/fapi/v1/time", "/fapi/v1/exchangeInfo"):
            return json_response({"code": -5000, "msg": f"Path {path}, Method GET is invalid"}, 404)
        ok, headers = self._use_weight(weight)
        if not ok:
            self.stats["rest_throttled"] += 1
            return json_response(
                {
                    "code": -1003,
                    "msg": "Too many requests; current limit of IP "
                    f"request weight is {self.settings.rest_weight_per_minute} per "
                    "minute.",
                },
                429,
                headers,
            )
        now = self.clock.now_ms()
        if path == "/fapi/v1/time":
            return json_response({"serverTime": now}, headers=headers)
        if path == "/fapi/v1/exchangeInfo":
            return json_response(self._exchange_info(now), headers=headers)
        response = self._klines(query, now)
        return Response(response.status, response.body, headers)

    def _klines(self, query: dict[str, str], now: int) -> Response:
        symbol = query.get("symbol") or ""
        if not symbol:
            raise BadParam("symbol", "missing")
        if not self.market.listed(symbol):
            return json_response({"code": -1121, "msg": "Invalid symbol."}, 400)
        interval = query.get("interval") or ""
        if not interval:
            raise BadParam("interval", "missing")
        if interval not in self.intervals:
            return json_response({"code": -1120, "msg": "Invalid interval."}, 400)
        limit = limit_param(query, "limit", 500, 1500)
        start, end = int_param(query, "startTime"), int_param(query, "endTime")
        if start is not None and end is not None and start > end:
            return json_response(
                {"code": -1128, "msg": "Combination of optional parameters invalid."}, 400
            )
        current = floor_open(interval, now)
        last = current if end is None else min(current, floor_open(interval, end))
        exists = functools.partial(self.market.exists, symbol)
        if start is not None:
            first = max(self.first_open(interval), first_open_at_or_after(interval, start))
            opens = opens_forward(interval, first, last, limit, exists)
        else:
            opens = opens_backward(interval, self.first_open(interval), last, limit, exists)[::-1]
        bars = [self.market.candle(symbol, interval, t, now) for t in opens]
        return json_response([self.kline_row(bar) for bar in bars])

    def _exchange_info(self, now: int) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": now,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.settings.rest_weight_per_minute,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [],
            "symbols": binance_symbols(self.market, self.settings.universe_size),
        }

    def rest_fault_response(self, fault: RestFault) -> Response:
        if fault.kind == "throttle":
            status = fault.status if fault.status in (418, 429) else 429
            retry = (("Retry-After", str(max(1, math.ceil(fault.retry_after_s)))),)
            msg = "Too many requests." if status == 429 else "Way too many requests; IP banned."
            return json_response({"code": -1003, "msg": msg}, status, retry)
        # Binance errors are 4xx/5xx; an error body under 200 is what a proxy or a
        # half-deployed gateway may send, and must not pass for candles either.
        return json_response(
            {
                "code": -1001,
                "msg": "Internal error; unable to process your request. Please try again.",
            },
            503 if fault.status is None else fault.status,
        )

    def bad_param_response(self, exc: BadParam) -> Response:
        if exc.name == "limit" and exc.problem != "not an integer":
            return json_response(
                {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}, 400
            )
        if exc.problem == "missing":
            return json_response(
                {
                    "code": -1102,
                    "msg": f"Mandatory parameter '{exc.name}' was "
                    "not sent, was empty/null, or malformed.",
                },
                400,
            )
        return json_response(
            {
                "code": -1100,
                "msg": f"Illegal characters found in parameter "
                f"'{exc.name}'; legal range is '^[0-9]{{1,20}}$'.",
            },
            400,
        )
