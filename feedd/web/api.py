"""HTTP routes: candles (a JSON page, or any range streamed as CSV, NDJSON or Parquet) and
health."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlencode

import attrs
from quart import Blueprint, Response, request

from feedd.store.exportrequest import FORMATS, MEDIA_TYPES, ExportRequest
from feedd.store.reader import JsonPage
from feedd.web import params
from feedd.web.errors import ApiError, json_response
from feedd.web.state import current_state as state

api = Blueprint("api", __name__)

#: rows one streamed export may be limited to (without ``limit``: the whole range)
MAX_EXPORT_LIMIT = 10**9


@api.get("/ohlcv/<exchange>/<symbol>/<interval>")
async def ohlcv(exchange: str, symbol: str, interval: str) -> Response:
    exchange = params.exchange_name(exchange)
    symbol = params.symbol(symbol)
    interval = params.interval(interval)
    args = request.args
    since = params.bounded_int(args, "since", 0, params.MAX_TIME_MS)
    until = params.bounded_int(args, "until", 0, params.MAX_TIME_MS)
    output = args.get("format", "json")
    if output != "json" and output not in FORMATS:
        raise ApiError(400, 'format must be "json", "csv", "ndjson" or "parquet"', "format")
    reader = state().reader
    native = interval in state().config.intervals
    if output == "json":
        limit = params.bounded_int(args, "limit", 1, params.MAX_LIMIT) or params.DEFAULT_LIMIT
        read_json = reader.candles_json if native else reader.resample_json
        page = await read_json(exchange, symbol, interval, since, until, limit)
        response = Response(page.body, content_type="application/json")
        link = page_link(page, since, until, limit)
        if link:
            response.headers["Link"] = link
        return response
    # Not collected natively: built from stored 1m candles, aligned to UTC.
    wanted = ExportRequest(
        exchange,
        symbol,
        interval,
        resampled=not native,
        format=output,
        since=since,
        until=until,
        limit=params.bounded_int(args, "limit", 1, MAX_EXPORT_LIMIT),
    )
    filename = f"{exchange}-{symbol}-{interval}.{output}"
    response = Response(
        reader.export(wanted),
        content_type=MEDIA_TYPES[output],
        headers={"Content-Disposition": params.attachment(filename)},
    )
    response.timeout = None  # a year of candles may take longer than Quart's 60 s default
    return response


def page_link(page: JsonPage, since: int | None, until: int | None, limit: int) -> str | None:
    """The ``Link`` to the page after a full one: later candles when paging up from
    ``since``, earlier ones when paging down from the newest (RFC 8288)."""
    if page.count < limit or page.first_open_time is None or page.last_open_time is None:
        return None
    query: dict[str, int] = {"limit": limit}
    if since is not None:
        query["since"] = page.last_open_time + 1
        if until is not None:
            query["until"] = until
        rel = "next"
    else:
        query["until"] = page.first_open_time - 1
        rel = "prev"
    return f'<{quote(request.path)}?{urlencode(query)}>; rel="{rel}"'


@api.get("/coverage")
async def coverage() -> Response:
    """Per series: first and last closed candle, count, holes; sources for one series."""
    args = request.args
    exchange = params.exchange_name(args["exchange"]) if "exchange" in args else None
    symbol = params.symbol(args["symbol"]) if "symbol" in args else None
    interval = params.interval(args["interval"]) if "interval" in args else None
    missing_only = params.boolean(args, "missing_only")
    reader = state().reader
    found = await reader.coverage(exchange, symbol, interval)
    series = []
    for item in found:
        if missing_only and not item.missing:
            continue
        doc: dict[str, Any] = {
            "exchange": item.exchange,
            "symbol": item.symbol,
            "interval": item.interval,
            "first_open_time": item.first_open_time,
            "last_open_time": item.last_open_time,
            "candles": item.candles,
            "missing_candles": item.missing_candles,
            "missing": [attrs.asdict(hole) for hole in item.missing],
        }
        if exchange is not None and symbol is not None:
            doc["sources"] = await reader.sources(item.exchange, item.symbol, item.interval)
        series.append(doc)
    return json_response({"series": series})


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
    if app_state.publisher is not None:
        # A broker away degrades nothing of the store: reported, not a 503.
        nats = app_state.publisher.stats
        body["nats"] = {
            "connected": nats.connected,
            "backlog": nats.backlog,
            "dropped_closed": nats.dropped_closed,
            "last_error": nats.last_error,
        }
    return json_response(body, 200 if healthy else 503)
