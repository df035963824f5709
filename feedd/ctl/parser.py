"""feedctl's command line: every subcommand, its arguments and its ``--help`` text.

Global options are accepted both before and after the subcommand; each leaf parser stores
the function that runs it in ``args.run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from urllib.parse import urlsplit

from feedd import __version__
from feedd.ctl import backfill, commands, export, history, tail

DEFAULT_URL = "http://127.0.0.1:3000"
#: restarts of several exchanges take seconds; the wait bounds a hung server, not a slow one
DEFAULT_TIMEOUT_S = 30.0
_AGO = re.compile(r"(\d+)([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

EPILOG = """\
exit status: 0 ok, 1 the server refused (its message on stderr), 2 usage error, 3 cannot \
connect (refused, unknown host, timeout).
environment: FEEDD_URL and FEEDD_TOKEN are the defaults of --url and --token."""


class Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own, so that short lines stay."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n".join(fill(line, width, indent) for line in text.splitlines())


def base_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def moment(text: str) -> int:
    """A time as epoch ms, an ISO date/time (UTC unless it has an offset), or ``90m`` ago."""
    if text.isdigit():
        return int(text)
    ago = _AGO.fullmatch(text)
    if ago:
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        return now_ms - int(ago[1]) * _UNIT_MS[ago[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (epoch ms, 2025-01-31T12:00, or an age like 90m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def symbol(text: str) -> str:
    # Symbols are canonical upper case everywhere; accepting btcusdt saves a round trip.
    return text.upper()


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes; the copies after the subcommand must not reset defaults."""
    parent = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parent.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        type=base_url,
        default=default(os.environ.get("FEEDD_URL") or DEFAULT_URL),
        help=f"feedd base URL (default: $FEEDD_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("FEEDD_TOKEN") or None),
        help="API token, sent as 'Authorization: Bearer' (default: $FEEDD_TOKEN)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the server's JSON instead of tables",
    )
    group.add_argument(
        "--timeout",
        type=seconds,
        default=default(DEFAULT_TIMEOUT_S),
        metavar="S",
        help=f"seconds to wait for an answer (default: {DEFAULT_TIMEOUT_S:g})",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedctl",
        description="Administer a running feedd over its HTTP API.",
        epilog=EPILOG,
        parents=[common_options(suppress=False)],
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"feedctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options(suppress=True)

    def add(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        text: str,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        return group.add_parser(
            name,
            help=text,
            description=description or text,
            parents=[common],
            epilog=EPILOG,
            formatter_class=Formatter,
        )

    add(
        sub,
        "status",
        "service, writer and per-exchange status",
        "Show the service's system and writer figures, every exchange and every series "
        "(GET /status).",
    ).set_defaults(run=commands.status)
    add(
        sub,
        "exchanges",
        "every known exchange: enabled, state, symbols",
        "List every known exchange, configured or not (GET /exchanges).",
    ).set_defaults(run=commands.exchanges)

    symbols = add(sub, "symbols", "list, add or remove an exchange's symbols")
    symbols_sub = symbols.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = add(
        symbols_sub,
        "list",
        "configured symbols and how many the venue lists",
        "Show an exchange's configured symbols and the venue's instrument list "
        "(GET /exchangeSymbols/<exchange>).",
    )
    listing.add_argument("exchange", help="e.g. binance_futures, bybit_futures, okx_futures")
    listing.add_argument("--all", action="store_true", help="also print every listed symbol")
    listing.set_defaults(run=commands.symbols_list)
    for action, verb in (("add", "collect"), ("remove", "stop collecting")):
        change = add(
            symbols_sub,
            action,
            f"{verb} symbols on one exchange",
            f"{verb.capitalize()} symbols on one exchange; only that exchange restarts "
            "(POST /exchangeSymbols).",
        )
        change.add_argument("exchange", help="e.g. binance_futures")
        change.add_argument(
            "symbols",
            nargs="+",
            type=symbol,
            metavar="SYMBOL",
            help="canonical symbol such as BTCUSDT",
        )
        change.set_defaults(run=commands.symbols_change, change=action)

    for name, enabled in (("enable", True), ("disable", False)):
        toggle = add(
            sub,
            name,
            f"{name} one exchange",
            f"{name.capitalize()} one exchange; only it restarts (POST /toggleExchange).",
        )
        toggle.add_argument("exchange", help="e.g. okx_futures")
        toggle.set_defaults(run=commands.toggle, enabled=enabled)

    add(
        sub,
        "restart",
        "re-read the config file and restart all ingest",
        "Re-read the config file and restart all ingest; the web server stays up (POST /restart).",
    ).set_defaults(run=commands.restart)
    delete = add(
        sub,
        "delete-db",
        "delete every stored candle (needs --yes)",
        "Delete every stored candle and start a fresh database; ingest continues "
        "(POST /deleteDatabase). Refuses without --yes.",
    )
    delete.add_argument("--yes", action="store_true", help="confirm: delete every candle")
    delete.set_defaults(run=commands.delete_db, parser=delete)

    ohlcv = add(
        sub,
        "ohlcv",
        "stored candles of one series",
        "Print candles of one series, oldest first (GET /ohlcv). Times: epoch ms, "
        "ISO 8601 (UTC unless an offset is given) or an age such as 90m, 6h, 2d.",
    )
    ohlcv.add_argument("exchange", help="e.g. binance_futures")
    ohlcv.add_argument("symbol", type=symbol, help="e.g. BTCUSDT")
    ohlcv.add_argument("interval", help="1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M")
    ohlcv.add_argument("--since", type=moment, metavar="TIME", help="first open time (inclusive)")
    ohlcv.add_argument("--until", type=moment, metavar="TIME", help="last open time (inclusive)")
    ohlcv.add_argument(
        "--limit",
        type=positive,
        metavar="N",
        help="at most N candles, 1-5000 (server default 1000)",
    )
    ohlcv.add_argument("--csv", action="store_true", help="print the server's CSV")
    ohlcv.set_defaults(run=commands.ohlcv, parser=ohlcv)

    dump = add(
        sub,
        "export",
        "any range of one series into a CSV, NDJSON or Parquet file",
        "Download every candle of one series in [--since, --until] into FILE, streamed "
        "(GET /ohlcv/... with format=), with a progress bar on a terminal. FILE appears only "
        "once complete (FILE.part meanwhile). Higher intervals not collected are resampled "
        "from 1m. CSV and NDJSON carry the exact decimal text the venue sent.",
    )
    dump.add_argument("exchange", help="e.g. binance_futures")
    dump.add_argument("symbol", type=symbol, help="e.g. BTCUSDT")
    dump.add_argument("interval", type=export.interval_name, help="e.g. 1m, 1h, 1d")
    dump.add_argument(
        "--since", type=moment, metavar="TIME", required=True, help="first open time (inclusive)"
    )
    dump.add_argument(
        "--until", type=moment, metavar="TIME", help="last open time (inclusive; default: now)"
    )
    dump.add_argument(
        "--format", choices=("csv", "ndjson", "parquet"), default="csv", help="default: csv"
    )
    dump.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    dump.set_defaults(run=export.export)

    covered = add(
        sub,
        "coverage",
        "first and last candle, count and holes of each series",
        "Show, per stored series, the first and last closed candle, how many are stored and "
        "which open times are missing between them (GET /coverage). For one series "
        "(EXCHANGE SYMBOL) also where its candles came from (live WebSocket or REST).",
    )
    covered.add_argument("exchange", nargs="?", help="only this exchange")
    covered.add_argument("symbol", nargs="?", type=symbol, help="only this symbol")
    covered.add_argument("--interval", type=export.interval_name, help="only this interval")
    covered.add_argument(
        "--missing-only", action="store_true", help="only series with holes, holes listed"
    )
    covered.set_defaults(run=history.coverage)

    jobs = add(
        sub,
        "backfill",
        "fetch any range of history in the background; list or cancel jobs",
        "feedctl backfill EXCHANGE SYMBOL... --since TIME [--until TIME]: start a job (POST "
        "/backfill) and follow it with a progress bar (plain lines when piped); Ctrl-C stops "
        "following, the job goes on. feedctl backfill list: every job. feedctl backfill cancel "
        "ID: cancel a running job, or remove a finished one from the list.",
    )
    jobs.add_argument("words", nargs="+", metavar="EXCHANGE SYMBOL... | list | cancel ID")
    jobs.add_argument("--interval", type=export.interval_name, default="1m", help="default: 1m")
    jobs.add_argument("--since", type=moment, metavar="TIME", help="first open time")
    jobs.add_argument("--until", type=moment, metavar="TIME", help="last open time (default: now)")
    jobs.add_argument("--detach", action="store_true", help="print the job's id and return")
    jobs.set_defaults(run=backfill.run)

    live = add(
        sub,
        "tail",
        "follow live candles over the WebSocket",
        "Print candles as feedd commits them (WebSocket /ws) until Ctrl-C or --count. "
        "With --json, one candle object per line.",
    )
    live.add_argument("--exchange", help="only this exchange")
    live.add_argument("--symbol", type=symbol, help="only this symbol")
    live.add_argument("--interval", help="only this interval")
    live.add_argument("--count", type=positive, metavar="N", help="stop after N candles")
    live.add_argument("--closed", action="store_true", help="only closed candles")
    live.add_argument(
        "--nats",
        metavar="URL",
        help="read the NATS JetStream stream at URL (nats://[user:pass@]host:port) instead of "
        "feedd's /ws; credentials also from $FEEDD_NATS_CREDS",
    )
    live.add_argument(
        "--since",
        type=moment,
        metavar="TIME",
        help="with --nats: replay from TIME (e.g. 1h, an ISO time), then follow",
    )
    live.add_argument(
        "--subject", metavar="PATTERN", help="with --nats: a subject pattern instead of filters"
    )
    live.add_argument("--prefix", default="feedd", help="with --nats: subject prefix (feedd)")
    live.add_argument("--stream", default="FEEDD_CANDLES", help="with --nats: stream name")
    live.set_defaults(run=tail.run)

    cfg = add(sub, "config", "show or replace the running configuration")
    cfg_sub = cfg.add_subparsers(dest="action", metavar="ACTION", required=True)
    add(
        cfg_sub,
        "get",
        "print the running configuration (config.json format)",
        'Print the running configuration as JSON; api_token shows as "***" (GET /config).',
    ).set_defaults(run=commands.config_get)
    put = add(
        cfg_sub,
        "set",
        "replace the whole configuration",
        "Validate, save and apply a whole configuration (POST /config). Only exchanges "
        'whose settings changed restart; an api_token of "***" keeps the current one.',
    )
    put.add_argument("file", metavar="FILE", help="config.json to send, or - for stdin")
    put.set_defaults(run=commands.config_set)
    return parser
