"""The HTTP commands: one request each, printed as the server's JSON or as tables.

Renderers read the answer with ``.get`` so that a field the server leaves out shows as ``-``
instead of failing the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from feedd.ctl import text
from feedd.ctl.client import BadInput, Client, api_path, decode

#: candles per page when --limit is not given, as the server's default
DEFAULT_LIMIT = 1000


def emit(body: bytes | str) -> None:
    """The server's answer as it came, for ``--json``, ``--csv`` and scripts."""
    out = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    sys.stdout.write(out if out.endswith("\n") else out + "\n")


def status(client: Client, args: argparse.Namespace) -> None:
    response = client.get_raw("/status")
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    now = doc.get("time")
    system, writer = doc.get("system") or {}, doc.get("writer") or {}
    print(
        f"feedd {doc.get('version', text.NONE)}  up {text.age(system.get('uptime_s'))}  "
        f"at {text.utc(now)} UTC"
    )
    print(
        "system   "
        + ", ".join(
            [
                f"cpu {text.percent(system.get('cpu_percent'))} of "
                f"{system.get('cpu_count', text.NONE)}",
                f"memory {text.size(system.get('memory_used'))} / "
                f"{text.size(system.get('memory_total'))}",
                f"process rss {text.size(system.get('process_rss'))}",
                f"process cpu {text.percent(system.get('process_cpu_percent'))}",
                f"threads {system.get('threads', text.NONE)}",
                f"fds {system.get('open_fds', text.NONE)}",
            ]
        )
    )
    print(
        f"storage  database {text.size(system.get('db_size'))}, disk free "
        f"{text.size(system.get('disk_free'))} of {text.size(system.get('disk_total'))}"
    )
    print(
        "writer   "
        + ", ".join(
            [
                "healthy" if writer.get("healthy") else "UNHEALTHY",
                f"committed {text.count(writer.get('committed'))}",
                f"pending {text.count(writer.get('pending'))}",
                f"batch p50 {text.millis(writer.get('latency_p50_ms'))}",
                f"p99 {text.millis(writer.get('latency_p99_ms'))}",
                f"retries {text.count(writer.get('retries'))}",
                f"pruned {text.count(writer.get('pruned'))}",
            ]
        )
    )
    if writer.get("last_error"):
        print(f"         last error: {writer['last_error']}")
    exchanges: list[dict[str, Any]] = doc.get("exchanges") or []
    print()
    print(exchange_table(exchanges))
    errors = [(e.get("name"), e.get("last_error")) for e in exchanges if e.get("last_error")]
    for name, error in errors:
        print(f"  {name}: {error}")
    rows = []
    for ex in exchanges:
        for series in ex.get("symbols") or []:
            last = series.get("last") or {}
            seen = last.get("time")
            since = (now - seen) / 1000 if isinstance(now, int) and isinstance(seen, int) else None
            progress = series.get("backfill_progress")
            note = series.get("error") or (
                f"backfill {progress:.0%}" if isinstance(progress, int | float) else ""
            )
            rows.append(
                [
                    str(ex.get("name")),
                    str(series.get("symbol")),
                    str(series.get("interval")),
                    str(series.get("state")),
                    text.number(last.get("close")),
                    text.utc(last.get("open_time")),
                    text.age(since),
                    str(note),
                ]
            )
    if rows:
        print()
        headers = ["EXCHANGE", "SYMBOL", "INTERVAL", "STATE", "CLOSE", "OPEN TIME", "AGE", "NOTE"]
        print(text.table(headers, rows, right=(4, 6)))


def exchange_table(exchanges: list[dict[str, Any]]) -> str:
    headers = [
        "EXCHANGE", "ENABLED", "STATE", "HEALTH", "CONNS", "STREAMS", "MSG/S", "CANDLES/S",
        "RECONNECTS", "GAPS", "LAST MSG",
    ]  # fmt: skip
    rows = [
        [
            str(ex.get("name")),
            text.yes_no(ex.get("enabled")),
            str(ex.get("state", text.NONE)),
            str(ex.get("health", text.NONE)),
            text.count(ex.get("connections")),
            f"{text.count(ex.get('streams_subscribed'))}/{text.count(ex.get('streams'))}",
            text.rate(ex.get("messages_per_s")),
            text.rate(ex.get("candles_per_s")),
            text.count(ex.get("reconnects")),
            text.count(ex.get("gaps_healed")),
            text.age(ex.get("last_message_age_s")),
        ]
        for ex in exchanges
    ]
    return text.table(headers, rows, right=range(4, 11))


def exchanges(client: Client, args: argparse.Namespace) -> None:
    response = client.get_raw("/exchanges")
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    rows = [
        [
            str(ex.get("name")),
            text.yes_no(ex.get("enabled")),
            str(ex.get("state", text.NONE)),
            str(ex.get("health", text.NONE)),
            text.count(ex.get("connections")),
            text.count(ex.get("streams")),
            text.words(ex.get("symbols")),
        ]
        for ex in doc.get("exchanges") or []
    ]
    headers = ["EXCHANGE", "ENABLED", "STATE", "HEALTH", "CONNS", "STREAMS", "SYMBOLS"]
    print(text.table(headers, rows, right=(4, 5)))


def symbols_list(client: Client, args: argparse.Namespace) -> None:
    response = client.get_raw(api_path("exchangeSymbols", args.exchange))
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    listed: list[str] = doc.get("listed") or []
    known = set(listed)
    rows = [[s, text.yes_no(s in known)] for s in doc.get("configured") or []]
    print(text.table(["SYMBOL", "LISTED"], rows))
    print(f"\n{len(listed)} symbols listed by {doc.get('exchange', args.exchange)}", end="")
    print(f" (fetched {text.utc(doc.get('fetched_at'))} UTC)")
    if args.all:
        print(columns(listed))


def columns(items: list[str], width: int = 100) -> str:
    """Items in as many aligned columns as fit in ``width``, read down then across."""
    if not items:
        return ""
    cell = max(len(i) for i in items) + 2
    per_line = max(1, width // cell)
    lines = -(-len(items) // per_line)
    return "\n".join(
        "".join(items[i].ljust(cell) for i in range(row, len(items), lines)).rstrip()
        for row in range(lines)
    )


def restarted(doc: dict[str, Any]) -> str:
    names = doc.get("restarted") or []
    return f"restarted: {', '.join(names)}" if names else "nothing restarted"


def symbols_change(client: Client, args: argparse.Namespace) -> None:
    response = client.post_raw(
        "/exchangeSymbols", {"exchange": args.exchange, args.change: args.symbols}
    )
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    print(f"{doc.get('exchange', args.exchange)} symbols: {text.words(doc.get('symbols'))}")
    print(restarted(doc))


def toggle(client: Client, args: argparse.Namespace) -> None:
    response = client.post_raw(
        "/toggleExchange", {"exchange": args.exchange, "enabled": args.enabled}
    )
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    state = "enabled" if doc.get("enabled", args.enabled) else "disabled"
    print(f"{doc.get('exchange', args.exchange)} {state}; {restarted(doc)}")


def restart(client: Client, args: argparse.Namespace) -> None:
    response = client.post_raw("/restart", {})
    if args.json:
        return emit(response.content)
    print(restarted(decode(response)))


def delete_db(client: Client, args: argparse.Namespace) -> None:
    if not args.yes:
        # argparse's own error path: usage line, one message, exit status 2.
        args.parser.error("refusing to delete every stored candle without --yes")
    response = client.post_raw("/deleteDatabase", {"confirm": "DELETE"})
    if args.json:
        return emit(response.content)
    print("database deleted; ingest continues into a fresh one")


def ohlcv(client: Client, args: argparse.Namespace) -> None:
    if args.csv and args.json:
        args.parser.error("--csv and --json exclude each other")
    params: dict[str, Any] = {"format": "csv" if args.csv else "json"}
    for name in ("since", "until", "limit"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    # A CSV without a limit is the whole range (an export): this command shows one page.
    params.setdefault("limit", DEFAULT_LIMIT)
    path = api_path("ohlcv", args.exchange, args.symbol, args.interval)
    response = client.get_raw(path, params)
    if args.csv or args.json:
        return emit(response.content)
    candles: list[dict[str, Any]] = decode(response)
    print(candle_table(candles))


def candle_table(candles: list[dict[str, Any]]) -> str:
    headers = [
        "OPEN TIME (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "QUOTE VOLUME", "TRADES",
        "CLOSED", "SOURCE",
    ]  # fmt: skip
    rows = [
        [
            text.utc(c.get("open_time")),
            *(text.number(c.get(k)) for k in ("open", "high", "low", "close", "volume")),
            text.number(c.get("quote_volume")),
            text.count(c.get("trades")),
            text.yes_no(c.get("closed")),
            str(c.get("source", text.NONE)),
        ]
        for c in candles
    ]
    return text.table(headers, rows, right=range(1, 8))


def config_get(client: Client, args: argparse.Namespace) -> None:
    response = client.get_raw("/config")
    if args.json:
        return emit(response.content)
    # Indented, so that it can be saved, edited and sent back with ``config set``.
    emit(orjson.dumps(decode(response), option=orjson.OPT_INDENT_2))


def read_config(path: str) -> object:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"{'stdin' if path == '-' else path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{'stdin' if path == '-' else path}: expected a JSON object")
    return doc


def config_set(client: Client, args: argparse.Namespace) -> None:
    response = client.post_raw("/config", read_config(args.file))
    if args.json:
        return emit(response.content)
    doc: dict[str, Any] = decode(response)
    print(f"configuration saved; {restarted(doc)}")
    for warning in doc.get("warnings") or []:
        print(f"warning: {warning}")
    if doc.get("restart_required"):
        keys = ", ".join(doc["restart_required"])
        print(f"restart feedd to apply: {keys}")
