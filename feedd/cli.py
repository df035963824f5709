"""The ``feedd`` command: parse arguments, load the config, run the service until a signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from feedd import __version__
from feedd import config as config_module
from feedd.errors import ConfigError, FeeddError
from feedd.service import check_exposure, run_service

EXIT_CONFIG = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedd",
        description="Collect OHLCV candles from Binance USD-M, Bybit linear and OKX swap into "
        "SQLite and serve them over HTTP.",
    )
    parser.add_argument(
        "--config",
        default="config.json",
        metavar="PATH",
        help="configuration file (default: ./config.json)",
    )
    parser.add_argument("--host", help="address to bind the HTTP API (overrides the config)")
    parser.add_argument("--port", type=int, help="port of the HTTP API (overrides the config)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    parser.add_argument("--version", action="version", version=f"feedd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    log = logging.getLogger("feedd")
    try:
        loaded = config_module.load(args.config)
        config = loaded.config
        overrides = {}
        if args.host is not None:
            overrides["host"] = args.host
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise ConfigError("--port", f"must be between 0 and 65535, got {args.port}")
            overrides["port"] = args.port
        config = attrs.evolve(config, **overrides)
        check_exposure(config)
    except ConfigError as exc:
        print(f"feedd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings:
        log.warning("config: %s", warning)
    database = config_module.database_file(config, args.config)
    try:
        trio.run(_run, config, database)
    except FeeddError as exc:
        print(f"feedd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _run(config: config_module.Config, database: Path) -> None:
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if stop.is_set():
                        logging.getLogger("feedd").warning("second signal: exiting now")
                        nursery.cancel_scope.cancel()
                        return
                    logging.getLogger("feedd").info("received %s", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch_signals)
            await run_service(config, database, stop=stop)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
