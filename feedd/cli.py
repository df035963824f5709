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

from feedd import __version__, sdnotify
from feedd import config as config_module
from feedd.errors import ConfigError, FeeddError
from feedd.logsetup import FORMATS, configure_logging
from feedd.service import Service, check_exposure, run_service

EXIT_CONFIG = 2


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
    parser.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="log lines on stderr: 'text' is LEVEL logger: message (timestamped unless "
        "journald stamps them), 'json' is one JSON object per line (default: text)",
    )
    parser.add_argument("--version", action="version", version=f"feedd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
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
        trio.run(_run, config, database, Path(args.config))
    except FeeddError as exc:
        print(f"feedd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _run(config: config_module.Config, database: Path, config_path: Path) -> None:
    log = logging.getLogger("feedd")
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if stop.is_set():
                        log.warning("second signal: exiting now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("received %s", signal.Signals(signum).name)
                    # Tells systemd the exit that follows is an orderly one under way, also when
                    # the signal came from kill(1) rather than from systemctl stop.
                    sdnotify.notify("STOPPING=1", "STATUS=shutting down")
                    stop.set()

            async def serve(*, task_status: trio.TaskStatus[Service]) -> None:
                await run_service(
                    config, database, config_path=config_path, stop=stop, task_status=task_status
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                await nursery.start(sdnotify.run_watchdog, interval)
            # run_service reports once the writer, the web server and ingest are running.
            service = await nursery.start(serve)
            if not stop.is_set():
                sdnotify.notify("READY=1", f"STATUS=serving on {service.url}")


if __name__ == "__main__":
    sys.exit(main())
