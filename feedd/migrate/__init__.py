"""``feedd migrate``: copy one store into another (SQLite -> PostgreSQL, or any pair) through the
store interface, resumably, then verify each series by row count and checksum on both sides.

This module is the command (arguments, one-line errors, the summary); ``pipeline`` runs it,
``copy`` moves the candles and the progress row, ``verify`` compares the two sides.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson
import trio

from feedd import errors
from feedd.errors import ConfigError, FeeddError, StoreError
from feedd.migrate.copy import BATCH_ROWS
from feedd.migrate.pipeline import Summary, migrate
from feedd.storageconfig import DSN_ENV, StorageConfig
from feedd.store.backend import Backend, open_backend
from feedd.store.spec import SPEC_FORMS, parse_spec

__all__ = ["BATCH_ROWS", "Summary", "add_command", "migrate", "run"]

log = logging.getLogger("feedd.migrate")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SPEC = SPEC_FORMS

DESCRIPTION = """\
Copy every candle (exact values, closed flag, source) and every saved job of one store into
another through feedd's store interface: SQLite -> PostgreSQL to scale out, SQLite -> SQLite to
compact a file, PostgreSQL -> SQLite for a local copy. The target's upsert rules apply, so a
closed candle already there is never replaced by a forming one, and the coverage (holes
included) follows from the candles written.

Resumable: the target keeps how far each series got (a row in its jobs table, saved in the
same transaction as the candles), so after Ctrl-C, a kill or a crash the same command goes on
where it stopped, and a later run copies only what the source gained since. At the end each
series is verified over the source's range: row count and a checksum of every row's open time,
exact values, trades, closed flag and source must be equal on both sides; a difference is named
and the exit status is 1. Passwords are never printed.
"""

EPILOG = f"""\
stores: sqlite:PATH (relative to the current folder; sqlite:///abs/path also works) or
postgresql://user:password@host:port/database. --to defaults to ${DSN_ENV}.
exit status: 0 copied and verified, 1 a failure or a difference found, 2 bad arguments,
130 interrupted (run the same command again to continue).
"""


def add_command(commands: Any) -> None:
    """The ``migrate`` subcommand of ``feedd`` (``commands`` is argparse's subparsers)."""
    parser = commands.add_parser(
        "migrate",
        help="copy a store into another (SQLite -> PostgreSQL), resumable, verified",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Checked by ``run`` rather than argparse, so that a missing one is a one-line error too.
    parser.add_argument(
        "--from", dest="source", metavar="STORE", help=f"the store to copy: {_SPEC}"
    )
    parser.add_argument(
        "--to", dest="target", metavar="STORE", help=f"the store to fill (default: ${DSN_ENV})"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH_ROWS,
        metavar="ROWS",
        help=f"candles per transaction on the target (default: {BATCH_ROWS})",
    )


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``feedd migrate``: the exit status; every failure is one line on stderr."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        base = Path.cwd()
        source = open_backend(store_config("--from", args.source), base)
        check_source(source)
        target_text = args.target if args.target is not None else os.environ.get(DSN_ENV)
        if target_text is None:
            raise ConfigError("--to", f"missing: give {_SPEC}, or set ${DSN_ENV}")
        target = open_backend(store_config("--to", target_text), base)
        if args.batch < 1:
            raise ConfigError("--batch", f"expected a positive number of rows, got {args.batch}")
        check_pair(source, target)
        summary = trio.run(migrate, source, target, args.batch, err)
    except ConfigError as exc:
        print(f"feedd migrate: error: {exc}", file=err)
        return EXIT_USAGE
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return _failed(exc, err)
    if args.json:
        out.write(orjson.dumps(summary.to_json()).decode() + "\n")
    else:
        out.write(describe(summary))
    out.flush()
    return EXIT_FAILED if summary.mismatches else EXIT_OK


def _failed(exc: BaseException, err: TextIO) -> int:
    """One line for what stopped the run (trio may wrap it in exception groups)."""
    if any(isinstance(e, KeyboardInterrupt) for e in errors.leaves(exc)):
        print("\nfeedd migrate: interrupted; run the same command again to continue", file=err)
        return EXIT_INTERRUPTED
    cause = errors.collapse(exc)
    if isinstance(cause, FeeddError):
        print(f"\nfeedd migrate: error: {cause}", file=err)
        return EXIT_FAILED
    # A bug: its traceback is what a fix needs.
    log.critical("unexpected error: %r", cause, exc_info=cause)
    return EXIT_FAILED


def store_config(option: str, text: str | None) -> StorageConfig:
    """``sqlite:PATH`` or a PostgreSQL URL as a storage config; errors never echo a URL."""
    if not text:
        raise ConfigError(option, f"missing: give {_SPEC}")
    try:
        return parse_spec(text)
    except ConfigError as exc:
        raise ConfigError(option, exc.problem) from None


def check_source(source: Backend) -> None:
    try:
        source.check_source()
    except StoreError as exc:
        raise ConfigError("--from", str(exc)) from None


def check_pair(source: Backend, target: Backend) -> None:
    if source.same_store(target):
        raise ConfigError("--to", f"is the store --from names ({source.spec})")


def describe(summary: Summary) -> str:
    lines = [
        f"copied {summary.rows_copied:,} of {summary.rows_total:,} candles in {summary.series}"
        f" series and {summary.jobs} jobs in {summary.copy_seconds:.1f} s"
        f" ({summary.rows_per_s:,.0f} candles/s)"
    ]
    for m in summary.mismatches:
        where = (
            ""
            if m.first_difference is None
            else f", first difference at open time {m.first_difference}"
        )
        lines.append(
            f"DIFFERENT {m.exchange} {m.symbol} {m.interval}: {m.source_rows} rows in the source,"
            f" {m.target_rows} in the target{where}"
        )
    if summary.mismatches:
        lines.append(f"verified: {len(summary.mismatches)} of {summary.series} series differ")
    else:
        lines.append(
            f"verified in {summary.verify_seconds:.1f} s: all {summary.series} series equal"
            " (row counts and checksums)"
        )
    return "\n".join(lines) + "\n"
