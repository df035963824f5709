"""The ``feedd`` command: find and check the config, run the service until a signal.

Every failure leaves as one log line and an exit status: 2 for configuration (restarting cannot
fix it), 1 for the rest. SIGHUP re-reads the config file; SIGINT and SIGTERM stop.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from feedd import __version__, errors, migrate, sdnotify
from feedd import config as config_module
from feedd.configsource import CONFIG_ENV, DEFAULT_PATHS, TOKEN_ENV, find_config
from feedd.errors import ConfigError, FeeddError
from feedd.logsetup import FORMATS, configure_logging
from feedd.service import Service, run_service
from feedd.store.backend import Backend, open_backend

log = logging.getLogger("feedd")

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

_LOOKUP = (
    f"--config PATH, else ${CONFIG_ENV}, else "
    + ", else ".join(str(path) for path in DEFAULT_PATHS)
    + " (the first that exists)"
)

_EPILOG = f"""\
config file: {_LOOKUP}.
api token: in the config file (api_token), or outside it in ${TOKEN_ENV} or the systemd
credential api_token ($CREDENTIALS_DIRECTORY/api_token); give it in one place only.
signals: SIGHUP re-reads the config file and restarts ingest from it (as POST /restart);
SIGTERM or SIGINT shut down in order, a second one exits at once.
exit status: 0 after a clean shutdown, 2 for a configuration error, 1 for any other failure.
"""


@attrs.frozen
class Prepared:
    path: Path
    how: str
    config: config_module.Config
    warnings: tuple[str, ...]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedd",
        description="Collect OHLCV candles from Binance USD-M, Bybit linear and OKX swap into "
        "SQLite and serve them over HTTP. Without a command: run the service.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${CONFIG_ENV}, else ./config.json, else "
        "/etc/feedd/config.json)",
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
        "journald stamps them), 'json' is one JSON object per line (default: text); under "
        "journald each record is one entry with its priority",
    )
    parser.add_argument("--version", action="version", version=f"feedd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a config file with the rules startup applies, then exit",
        description="Validate a config file with exactly the rules feedd applies at startup "
        "(and POST /config): print one OK line and exit 0, or the error and exit 2. The "
        "file is checked, not the machine: a port in use or an unwritable database folder "
        "shows only when feedd starts.",
    )
    check.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help=f"the file to check (default: the one feedd would run: {_LOOKUP})",
    )
    migrate.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Until trio's receiver takes SIGHUP over, its default action would end feedd, a death
    # systemd counts as clean (Restart=on-failure would not act). A reload that early is moot:
    # the file is about to be read.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command == "migrate":
        return migrate.run(args)
    try:
        given = getattr(args, "path", None) or args.config
        prepared = prepare(given, args.host, args.port)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EXIT_CONFIG
    for warning in prepared.warnings:
        log.warning("config: %s", warning)
    if args.command == "check-config":
        print(ok_line(prepared))
        return 0
    log.info("config file %s (%s)", prepared.path.resolve(), prepared.how)
    if prepared.config.api_token_source is not None:
        log.info("api token from %s", prepared.config.api_token_source)
    store = open_backend(prepared.config.storage, config_module.config_folder(prepared.path))
    try:
        trio.run(_run, prepared.config, store, prepared.path)
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return exit_status(exc)
    return 0


def prepare(given: str | None, host: str | None, port: int | None) -> Prepared:
    """The config feedd would run: found, loaded, overridden from the command line, checked."""
    found = find_config(given)
    loaded = config_module.load(found.path)
    config = loaded.config
    overrides = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if overrides:
        # Through parse, so that an override meets the very rules a config file does.
        try:
            config = config_module.parse({**config.to_json(), **overrides}).config
        except ConfigError as exc:
            if exc.path in overrides:
                raise ConfigError(f"--{exc.path}", exc.problem) from None
            raise
    return Prepared(found.path, found.how, config, loaded.warnings)


def ok_line(prepared: Prepared) -> str:
    config = prepared.config
    enabled = config.enabled_exchanges()
    symbols = sum(len(ex.symbols) for ex in enabled)
    source = config.api_token_source or "the config"
    token = f"; api token from {source}" if config.api_token else ""
    return (
        f"{prepared.path}: OK ({len(enabled)} of {len(config.exchanges)} exchanges enabled, "
        f"{symbols} symbols; serves {config.host}:{config.port}{token})"
    )


def exit_status(exc: BaseException) -> int:
    """Log what ended the service as one line and choose the exit status.

    trio hands over what a nursery's children raised inside exception groups; the error that
    explains the failure is the first of feedd's own."""
    found = list(errors.leaves(exc))
    if any(isinstance(e, KeyboardInterrupt) for e in found):
        return EXIT_INTERRUPTED
    cause = errors.collapse(exc)
    if isinstance(cause, ConfigError):
        log.error("config error: %s", cause)
        return EXIT_CONFIG
    if isinstance(cause, FeeddError):
        log.error("%s", cause)
        return EXIT_FAILURE
    # A bug: its traceback is what a fix needs (one journal entry, see logsetup).
    log.critical("unexpected error: %r", cause, exc_info=cause)
    return EXIT_FAILURE


async def _run(config: config_module.Config, store: Backend, config_path: Path) -> None:
    stop = trio.Event()
    # Size 1: SIGHUPs that arrive during a reload make one more reload, not a queue of them.
    reload_send, reload_recv = trio.open_memory_channel[None](1)
    reloads = trio.CancelScope()
    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with trio.open_signal_receiver(*wanted) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        if stop.is_set():
                            log.info("received SIGHUP while shutting down: ignored")
                        else:
                            try:
                                reload_send.send_nowait(None)
                            except trio.WouldBlock:
                                log.info("received SIGHUP: a reload is already due")
                        continue
                    if stop.is_set():
                        log.warning("second signal: exiting now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("received %s", name)
                    # Tells systemd the exit that follows is an orderly one under way, also when
                    # the signal came from kill(1) rather than from systemctl stop.
                    sdnotify.notify("STOPPING=1", "STATUS=shutting down")
                    # A reload half done must not race the shutdown of the ingest it restarts.
                    reloads.cancel()
                    stop.set()

            async def serve(*, task_status: trio.TaskStatus[Service]) -> None:
                await run_service(
                    config, store, config_path=config_path, stop=stop, task_status=task_status
                )
                nursery.cancel_scope.cancel()

            async def run_reloads(service: Service) -> None:
                with reloads:
                    async for _ in reload_recv:
                        await reload(service, config_path)

            nursery.start_soon(watch_signals)
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                await nursery.start(sdnotify.run_watchdog, interval)
            # run_service reports once the writer, the web server and ingest are running.
            service = await nursery.start(serve)
            if not stop.is_set():
                sdnotify.notify("READY=1", f"STATUS=serving on {service.url}")
            # A SIGHUP during startup waits in the channel until now.
            nursery.start_soon(run_reloads, service)


async def reload(service: Service, config_path: Path) -> None:
    """SIGHUP: what ``POST /restart`` does. A file that does not validate changes nothing."""
    log.info("received SIGHUP: reloading %s", config_path)
    sdnotify.reloading()
    try:
        applied = await service.state.controller.restart()
    except ConfigError as exc:
        log.error("reload refused, nothing changed: config error: %s", exc)
    except FeeddError as exc:
        log.error("reload failed: %s", exc)
    else:
        for warning in applied.warnings:
            log.warning("config: %s", warning)
        if applied.restart_required:
            log.warning(
                "reload: %s changed; applied at the next start",
                ", ".join(applied.restart_required),
            )
        log.info("reload done")
    sdnotify.notify("READY=1", f"STATUS=serving on {service.url}")


if __name__ == "__main__":
    sys.exit(main())
