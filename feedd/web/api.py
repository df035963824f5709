"""HTTP routes: candles and health. Later routes (status, config, ...) join this blueprint."""

from __future__ import annotations

import time

import attrs
from quart import Blueprint, Response, request

from feedd.store.reader import CandleRow
from feedd.web import params
from feedd.web.errors import ApiError, json_response
from feedd.web.state import current_state as state

api = Blueprint("api", __name__)

CSV_FIELDS = tuple(field.name for field in attrs.fields(CandleRow))


@api.get("/ohlcv/<exchange>/<symbol>/<interval>")
async def ohlcv(exchange: str, symbol: str, interval: str) -> Response:
    exchange = params.exchange_name(exchange)
    symbol = params.symbol(symbol)
    interval = params.interval(interval)
    args = request.args
    limit = params.bounded_int(args, "limit", 1, params.MAX_LIMIT) or params.DEFAULT_LIMIT
    since = params.bounded_int(args, "since", 0, params.MAX_TIME_MS)
    until = params.bounded_int(args, "until", 0, params.MAX_TIME_MS)
    output = args.get("format", "json")
    if output not in ("json", "csv"):
        raise ApiError(400, 'format must be "json" or "csv"', "format")
    reader = state().reader
    native = interval in state().config.intervals
    if output == "json":
        read_json = reader.candles_json if native else reader.resample_json
        rows = await read_json(exchange, symbol, interval, since, until, limit)
        return Response(rows, content_type="application/json")
    if native:
        candles = await reader.candles(exchange, symbol, interval, since, until, limit)
    else:
        # Not collected natively: built from stored 1m candles, aligned to UTC.
        candles = await reader.resample(exchange, symbol, interval, since, until, limit)
    filename = f"{exchange}-{symbol}-{interval}.csv"
    return Response(
        csv_lines(candles),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def csv_lines(rows: list[CandleRow]) -> str:
    out = [",".join(CSV_FIELDS)]
    for row in rows:
        values = attrs.astuple(row)
        out.append(",".join(_csv_value(v) for v in values))
    return "\n".join(out) + "\n"


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
            "dropped": writer.dropped,
            "recreated": writer.recreated,
        },
        "exchanges": exchanges,
    }
    return json_response(body, 200 if healthy else 503)
