"""HTTP routes: candles and health. Later routes (status, config, ...) join this blueprint."""

from __future__ import annotations

import time
from typing import cast

import attrs
import orjson
from quart import Blueprint, Response, current_app, request

from feedd.web import params
from feedd.web.errors import json_response
from feedd.web.state import AppState

api = Blueprint("api", __name__)


def state() -> AppState:
    return cast(AppState, current_app.config["FEEDD_STATE"])


@api.get("/ohlcv/<exchange>/<symbol>/<interval>")
async def ohlcv(exchange: str, symbol: str, interval: str) -> Response:
    exchange = params.exchange_name(exchange)
    symbol = params.symbol(symbol)
    interval = params.interval(interval)
    args = request.args
    limit = params.bounded_int(args, "limit", 1, params.MAX_LIMIT) or params.DEFAULT_LIMIT
    since = params.bounded_int(args, "since", 0, params.MAX_TIME_MS)
    until = params.bounded_int(args, "until", 0, params.MAX_TIME_MS)
    app_state = state()
    if interval in app_state.config.intervals:
        rows = await app_state.reader.candles_json(exchange, symbol, interval, since, until, limit)
    else:
        # Not collected natively: built from stored 1m candles, aligned to UTC.
        resampled = await app_state.reader.resample(exchange, symbol, interval, since, until, limit)
        rows = orjson.dumps([attrs.asdict(row) for row in resampled])
    return Response(rows, content_type="application/json")


@api.get("/health")
async def health() -> Response:
    app_state = state()
    writer = app_state.writer.stats
    exchanges = {
        name: {
            "state": s.state,
            "connections": s.connections,
            "last_message_age_s": s.last_message_age(),
        }
        for name, s in app_state.supervisor.stats.items()
    }
    healthy = writer.healthy
    body = {
        "status": "ok" if healthy else "degraded",
        "uptime_s": round(time.time() - app_state.started_at, 1),
        "store": {
            "healthy": writer.healthy,
            "last_error": writer.last_error,
            "pending": writer.pending,
        },
        "exchanges": exchanges,
    }
    return json_response(body, 200 if healthy else 503)
