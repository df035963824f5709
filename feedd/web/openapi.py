"""``/openapi.json``: the OpenAPI 3.1 description of every route, body and error shape.

Written by hand next to the routes; tests walk it against the live app (every route
documented, every documented route answering with the documented shapes).
"""

from __future__ import annotations

import functools
from typing import Any

from quart import Blueprint, Response

from feedd import __version__, exchanges
from feedd.intervals import INTERVAL_MS
from feedd.web.errors import json_response

openapi = Blueprint("openapi", __name__)

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str] | None = None, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
STRINGS: Schema = {"type": "array", "items": STRING}
#: an exchange as /status and /exchanges report it (feedd.web.status.worker_state)
WORKER_STATE: Schema = {
    "enum": [
        "disabled",
        "starting",
        "discovering",
        "connecting",
        "reconnecting",
        "live",
        "degraded",
        "crashed",
    ]
}
#: an exchange as the engine reports it, on /health (feedd.engine.stats.ExchangeStats.state)
ENGINE_STATE: Schema = {
    "enum": [
        "starting",
        "discovering",
        "connecting",
        "running",
        "stopped",
        "disabled",
        "crashed",
    ]
}

CANDLE_FIELDS = {
    "open_time": INTEGER,
    "open": NUMBER,
    "high": NUMBER,
    "low": NUMBER,
    "close": NUMBER,
    "volume": NUMBER,
    "quote_volume": NUMBER,
    "trades": {"type": ["integer", "null"]},
    "closed": BOOLEAN,
    "source": {"enum": ["ws", "rest", "archive"]},
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(["error"], error=STRING, field=STRING),
    "Candle": obj(list(CANDLE_FIELDS), **CANDLE_FIELDS),
    "Applied": obj(
        ["ok", "restarted", "restart_required", "warnings"],
        ok={"const": True},
        restarted=STRINGS,
        restart_required=STRINGS,
        warnings=STRINGS,
    ),
    "Config": {
        "type": "object",
        "description": "config.json format; every key optional",
        "properties": {
            "exchanges": {
                "type": "object",
                "propertyNames": {"enum": sorted(exchanges.REGISTRY)},
                "additionalProperties": obj(
                    symbols=STRINGS,
                    enabled=BOOLEAN,
                    ws_url=STRING,
                    rest_url=STRING,
                    archive_url=STRING,
                    connection_lifetime=NUMBER,
                    silence_timeout=NUMBER,
                    instruments_refresh=NUMBER,
                ),
            },
            "intervals": STRINGS,
            "storage": obj([], backend=STRING, path=STRING, dsn=STRING),
            "database_path": STRING,
            "batch_interval": INTEGER,
            "max_records": INTEGER,
            "bootstrap_load": INTEGER,
            "port": INTEGER,
            "host": STRING,
            "api_token": STRING,
            "allowed_hosts": STRINGS,
        },
    },
    "BackfillJob": obj(
        [
            "id",
            "exchange",
            "symbols",
            "interval",
            "since",
            "until",
            "state",
            "rows_done",
            "rows_expected",
            "rate_per_s",
            "eta_s",
            "errors",
            "created_at",
            "finished_at",
            "per_symbol",
            "sources",
            "node",
        ],
        id=STRING,
        exchange=STRING,
        symbols=STRINGS,
        interval=STRING,
        since=INTEGER,
        until=INTEGER,
        state={"enum": ["queued", "running", "done", "failed", "cancelled"]},
        rows_done=INTEGER,
        rows_expected=INTEGER,
        rate_per_s=NUMBER,
        eta_s=NULLABLE_NUMBER,
        errors=STRINGS,
        created_at=INTEGER,
        finished_at={"type": ["integer", "null"]},
        node=NULLABLE_STRING,
        per_symbol={
            "type": "array",
            "items": obj(
                ["symbol", "state", "rows_done", "rows_expected"],
                symbol=STRING,
                state={"enum": ["queued", "running", "done", "failed", "cancelled"]},
                rows_done=INTEGER,
                rows_expected=INTEGER,
            ),
        },
        sources=obj(["rest", "archive"], rest=INTEGER, archive=INTEGER),
        removed=BOOLEAN,
    ),
    "Worker": obj(
        ["name", "enabled", "state", "health", "streams", "connections"],
        name=STRING,
        enabled=BOOLEAN,
        state=WORKER_STATE,
        health={"enum": ["healthy", "degraded", "down", "disabled"]},
        streams=INTEGER,
        connections=INTEGER,
        streams_subscribed=INTEGER,
        messages_per_s=NUMBER,
        candles_per_s=NUMBER,
        cpu_percent=NUMBER,
        messages=INTEGER,
        candles=INTEGER,
        reconnects=INTEGER,
        rotations=INTEGER,
        gaps_healed=INTEGER,
        parse_errors=INTEGER,
        ignored_frames=INTEGER,
        exchange_errors=INTEGER,
        rest_requests=INTEGER,
        rest_weight_used=INTEGER,
        rest_rate_limited=INTEGER,
        backfill_pending=INTEGER,
        backfill_jobs={
            "type": "array",
            "items": obj(
                ["id", "state", "rows_done", "rows_expected", "eta_s"],
                id=STRING,
                state={"enum": ["queued", "running"]},
                rows_done=INTEGER,
                rows_expected=INTEGER,
                eta_s=NULLABLE_NUMBER,
            ),
        },
        last_message_age_s=NULLABLE_NUMBER,
        last_error=NULLABLE_STRING,
        symbols={
            "type": "array",
            "items": obj(
                ["symbol", "interval", "state"],
                symbol=STRING,
                interval=STRING,
                state={
                    "enum": [
                        "pending",
                        "live",
                        "silent",
                        "rejected",
                        "unlisted",
                        "backfilling",
                        "disabled",
                    ]
                },
                error=NULLABLE_STRING,
                backfill_progress=NULLABLE_NUMBER,
                last={
                    "oneOf": [
                        {"type": "null"},
                        obj(
                            ["open_time", "close", "volume", "closed", "time"],
                            time=INTEGER,
                            open_time=INTEGER,
                            close=NUMBER,
                            volume=NUMBER,
                            closed=BOOLEAN,
                        ),
                    ]
                },
            ),
        },
    ),
    "Status": obj(
        ["time", "version", "system", "writer", "exchanges"],
        time=INTEGER,
        version=STRING,
        system=obj(
            ["cpu_percent", "cpu_count", "memory_total", "process_rss", "db_size", "uptime_s"],
            cpu_percent=NUMBER,
            cpu_count=INTEGER,
            memory_total=INTEGER,
            memory_used=INTEGER,
            memory_percent=NUMBER,
            process_rss=INTEGER,
            process_heap=INTEGER,
            process_cpu_percent=NUMBER,
            threads=INTEGER,
            open_fds={"type": ["integer", "null"]},
            tasks=INTEGER,
            db_size=INTEGER,
            disk_free={"type": ["integer", "null"]},
            disk_total={"type": ["integer", "null"]},
            uptime_s=NUMBER,
            platform=STRING,
        ),
        writer=obj(
            ["received", "committed", "pending", "healthy"],
            received=INTEGER,
            committed=INTEGER,
            batches=INTEGER,
            pending=INTEGER,
            healthy=BOOLEAN,
            last_error=NULLABLE_STRING,
            latency_p50_ms=NULLABLE_NUMBER,
            latency_p99_ms=NULLABLE_NUMBER,
        ),
        live_clients=INTEGER,
        exchanges={"type": "array", "items": ref("Worker")},
    ),
    "LogLine": obj(
        ["seq", "time", "level", "logger", "message"],
        seq=INTEGER,
        time=INTEGER,
        level={"enum": ["debug", "info", "warning", "error", "critical"]},
        logger=STRING,
        message=STRING,
    ),
}

ERRORS = {
    "400": "bad input (the field is named; null where the schema has no null is bad input)",
    "401": "API token missing or wrong",
    "403": "cross-origin request or Host not allowed",
    "404": "unknown route, exchange or job",
    "408": "the body did not arrive within 10 s of the headers (the connection is closed)",
    "409": (
        "too many backfill jobs queued or running; or a node with role api refusing what "
        "would change collection or the shared data (its answer names the role)"
    ),
    "413": "body over 1 MiB",
    "415": "body is not Content-Type: application/json",
    "429": "too many requests in progress from this address; retry after Retry-After seconds",
    "503": "a dependency (store, exchange) is unavailable",
}


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def operation(
    summary: str,
    ok: Schema | None,
    *,
    ok_content: Schema | None = None,
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
    errors: tuple[str, ...] = ("400", "401", "403"),
) -> Schema:
    responses: Schema = {
        "200": {
            "description": "success",
            "content": ok_content if ok_content is not None else json_content(ok or {}),
        }
    }
    # Any HTTP route may be refused while its client has too many requests waiting.
    for code in (*errors, "429"):
        responses[code] = {"description": ERRORS[code], "content": json_content(ref("Error"))}
    op: Schema = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_content(body)}
        for code in ("408", "413", "415"):
            responses[code] = {"description": ERRORS[code], "content": json_content(ref("Error"))}
    return op


def accepted(op: Schema, description: str) -> Schema:
    """``op`` that may also answer 202 Accepted with its usual body (``description``: when)."""
    op["responses"]["202"] = {
        "description": description,
        "content": op["responses"]["200"]["content"],
    }
    return op


def created(op: Schema) -> Schema:
    """``op`` answering 201 Created where ``operation`` says 200."""
    op["responses"] = {"201" if k == "200" else k: v for k, v in op["responses"].items()}
    return op


def path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


EXCHANGE: Schema = {"enum": sorted(exchanges.REGISTRY)}
#: letters and digits of any script (not lower case), then USDT: see feedd.symbols
SYMBOL: Schema = {"type": "string", "minLength": 5, "maxLength": 28, "pattern": "USDT$"}
INTERVAL: Schema = {"enum": list(INTERVAL_MS)}
TIME: Schema = {"type": "integer", "minimum": 0, "maximum": 10**14}


def document() -> Schema:
    symbols_body = obj(
        ["exchange"], exchange=EXCHANGE, symbols=STRINGS, add=STRINGS, remove=STRINGS
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "feedd",
            "version": __version__,
            "description": "OHLCV collector API. With api_token set, every route needs "
            "Authorization: Bearer <token>. POST bodies are JSON objects only.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/ohlcv/{exchange}/{symbol}/{interval}": {
                "get": operation(
                    "Candles oldest first; intervals not collected are resampled from 1m. "
                    "JSON: one page of at most 5000, a full page carries a Link header to the "
                    'next (rel="next" from since, rel="prev" from the newest). csv, ndjson, '
                    "parquet: the whole range [since, until] streamed (limit optional)",
                    None,
                    ok_content={
                        "application/json": {"schema": {"type": "array", "items": ref("Candle")}},
                        "text/csv": {"schema": STRING},
                        "application/x-ndjson": {"schema": STRING},
                        "application/vnd.apache.parquet": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                    parameters=[
                        path_param("exchange", EXCHANGE),
                        path_param("symbol", SYMBOL),
                        path_param("interval", INTERVAL),
                        query_param("since", TIME, "first open time (ms), inclusive"),
                        query_param("until", TIME, "last open time (ms), inclusive"),
                        query_param(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
                            "at most this many: JSON 1-5000 (default 1000); streamed formats "
                            "any (default: the whole range); without since, the newest",
                        ),
                        query_param(
                            "format",
                            {"enum": ["json", "csv", "ndjson", "parquet"]},
                            "json (default), or a streamed csv, ndjson or parquet file",
                        ),
                    ],
                    errors=("400", "401", "403", "404", "503"),
                )
            },
            "/coverage": {
                "get": operation(
                    "Per stored series: first and last closed candle, how many are stored, "
                    "the holes between them; with exchange and symbol, also the sources",
                    obj(
                        ["series"],
                        series={
                            "type": "array",
                            "items": obj(
                                [
                                    "exchange",
                                    "symbol",
                                    "interval",
                                    "first_open_time",
                                    "last_open_time",
                                    "candles",
                                    "missing_candles",
                                    "missing",
                                ],
                                exchange=STRING,
                                symbol=STRING,
                                interval=STRING,
                                first_open_time=INTEGER,
                                last_open_time=INTEGER,
                                candles=INTEGER,
                                missing_candles=INTEGER,
                                missing={
                                    "type": "array",
                                    "items": obj(
                                        ["start", "end", "candles"],
                                        start=INTEGER,
                                        end=INTEGER,
                                        candles=INTEGER,
                                    ),
                                },
                                sources=obj(
                                    ["ws", "rest", "archive"],
                                    ws=INTEGER,
                                    rest=INTEGER,
                                    archive=INTEGER,
                                ),
                            ),
                        },
                    ),
                    parameters=[
                        query_param("exchange", EXCHANGE, "only this exchange"),
                        query_param("symbol", SYMBOL, "only this symbol"),
                        query_param("interval", INTERVAL, "only this interval"),
                        query_param(
                            "missing_only",
                            {"enum": ["true", "false", "1", "0", ""]},
                            "only series with holes",
                        ),
                    ],
                    errors=("400", "401", "403", "404", "503"),
                )
            },
            "/health": {
                "get": operation(
                    "ok (200) or degraded (503)",
                    obj(
                        ["status"],
                        status={"enum": ["ok", "degraded"]},
                        exchanges={
                            "type": "object",
                            "additionalProperties": obj(
                                ["state"],
                                state=ENGINE_STATE,
                                connections=INTEGER,
                                last_message_age_s=NULLABLE_NUMBER,
                            ),
                        },
                    ),
                    errors=("401", "403", "503"),
                )
            },
            "/status": {
                "get": operation(
                    "System, writer and per-exchange workers", ref("Status"), errors=("401", "403")
                )
            },
            "/metrics": {
                "get": operation(
                    "Prometheus text format",
                    None,
                    ok_content={"text/plain": {"schema": STRING}},
                    errors=("401", "403"),
                )
            },
            "/logs": {
                "get": operation(
                    "Recent log lines after a sequence number",
                    obj(
                        ["lines", "next"],
                        lines={"type": "array", "items": ref("LogLine")},
                        next=INTEGER,
                    ),
                    parameters=[
                        query_param(
                            "since", {"type": "integer", "minimum": 0}, "only lines after this seq"
                        ),
                        query_param(
                            "level",
                            {"enum": ["debug", "info", "warning", "error"]},
                            "minimum level",
                        ),
                        query_param(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 2000},
                            "newest lines at most",
                        ),
                    ],
                )
            },
            "/config": {
                "get": operation(
                    "The running configuration (api_token redacted)",
                    ref("Config"),
                    errors=("401", "403"),
                ),
                "post": operation(
                    "Validate, save atomically and apply a whole configuration",
                    ref("Applied"),
                    body=ref("Config"),
                    errors=("400", "401", "403", "409", "503"),
                ),
            },
            "/exchanges": {
                "get": operation(
                    "Every known exchange: enabled, symbols, state",
                    obj(
                        ["exchanges"],
                        exchanges={
                            "type": "array",
                            "items": obj(
                                ["name", "enabled", "symbols", "state", "health"],
                                name=STRING,
                                enabled=BOOLEAN,
                                symbols=STRINGS,
                                state=WORKER_STATE,
                                health=STRING,
                                connections=INTEGER,
                                streams=INTEGER,
                            ),
                        },
                    ),
                    errors=("401", "403"),
                )
            },
            "/exchangeSymbols/{exchange}": {
                "get": operation(
                    "Tradable symbols the exchange lists, and the configured ones",
                    obj(
                        ["exchange", "listed", "configured", "fetched_at"],
                        exchange=STRING,
                        listed=STRINGS,
                        configured=STRINGS,
                        fetched_at=INTEGER,
                    ),
                    parameters=[path_param("exchange", EXCHANGE)],
                    errors=("401", "403", "404", "409", "503"),
                )
            },
            "/exchangeSymbols": {
                "post": operation(
                    "Replace (symbols) or change (add/remove) an exchange's symbols",
                    {
                        "allOf": [
                            ref("Applied"),
                            obj(["exchange", "symbols"], exchange=STRING, symbols=STRINGS),
                        ]
                    },
                    body=symbols_body,
                    errors=("400", "401", "403", "404", "409", "503"),
                )
            },
            "/toggleExchange": {
                "post": operation(
                    "Enable or disable an exchange (enabled omitted: flip)",
                    {
                        "allOf": [
                            ref("Applied"),
                            obj(["exchange", "enabled"], exchange=STRING, enabled=BOOLEAN),
                        ]
                    },
                    body=obj(["exchange"], exchange=EXCHANGE, enabled=BOOLEAN),
                    errors=("400", "401", "403", "404", "409", "503"),
                )
            },
            "/restart": {
                "post": operation(
                    "Re-read the config file and restart all ingest (web stays up)",
                    ref("Applied"),
                    body={"type": "object"},
                    errors=("400", "401", "403"),
                )
            },
            "/deleteDatabase": {
                "post": operation(
                    "Delete every stored candle while ingest runs",
                    obj(["ok"], ok={"const": True}),
                    body=obj(["confirm"], confirm={"const": "DELETE"}),
                    errors=("400", "401", "403", "409", "503"),
                )
            },
            "/backfill": {
                "get": operation(
                    "Backfill jobs, oldest first",
                    obj(["jobs"], jobs={"type": "array", "items": ref("BackfillJob")}),
                    errors=("401", "403"),
                ),
                "post": created(
                    operation(
                        "Start a backfill job: closed candles of [since, until] not stored yet",
                        ref("BackfillJob"),
                        body=obj(
                            ["exchange", "symbols", "interval", "since"],
                            exchange=EXCHANGE,
                            symbols={"type": "array", "items": SYMBOL, "minItems": 1},
                            interval=STRING,
                            since=INTEGER,
                            until=INTEGER,
                        ),
                        errors=("400", "401", "403", "404", "409", "503"),
                    )
                ),
            },
            "/backfill/{job_id}": {
                "get": operation(
                    "One backfill job",
                    ref("BackfillJob"),
                    parameters=[path_param("job_id", STRING)],
                    errors=("401", "403", "404"),
                ),
                "delete": accepted(
                    operation(
                        "Cancel a queued or running job (kept, as cancelled), on whichever "
                        "node runs it; forget a finished one (removed: true). Needs "
                        "Content-Type: application/json like every change.",
                        ref("BackfillJob"),
                        parameters=[path_param("job_id", STRING)],
                        errors=("401", "403", "404", "415", "503"),
                    ),
                    "another node runs the job and has not stopped it within 40 s: the job as "
                    "last seen, with cancel_requested: true; the request stays in the store "
                    "and that node (or the one taking the job over) applies it",
                ),
            },
            "/openapi.json": {
                "get": operation("This document", {"type": "object"}, errors=("401", "403"))
            },
            "/ws": {
                "get": {
                    "summary": "WebSocket: subscribe/unsubscribe to candles, status, logs "
                    "(see docs/API.md); ?token= when api_token is set",
                    "responses": {
                        "101": {"description": "switching protocols"},
                        "426": {
                            "description": "a plain GET without Upgrade: websocket",
                            "content": json_content(ref("Error")),
                        },
                        **{
                            code: {
                                "description": ERRORS[code],
                                "content": json_content(ref("Error")),
                            }
                            for code in ("401", "403")
                        },
                    },
                }
            },
        },
    }


def resolve(schema: Schema) -> Schema:
    """``schema`` itself, or the component schema its ``$ref`` names."""
    ref_path = schema.get("$ref")
    if isinstance(ref_path, str) and ref_path.startswith("#/components/schemas/"):
        return resolve(SCHEMAS[ref_path.rsplit("/", 1)[1]])
    return schema


@functools.cache
def _body_schemas() -> dict[str, Schema]:
    return {
        path: op["requestBody"]["content"]["application/json"]["schema"]
        for path, ops in document()["paths"].items()
        for op in ops.values()
        if "requestBody" in op
    }


def body_schema(path: str) -> Schema | None:
    """The documented schema of the JSON body of a POST to ``path`` (None: takes none)."""
    return _body_schemas().get(path)


@openapi.get("/openapi.json")
async def openapi_json() -> Response:
    return json_response(document())
