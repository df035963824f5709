"""``feedctl``: the admin command line over feedd's HTTP API (commands arrive with the full API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from feedd import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedctl",
        description="Administer a running feedd over its HTTP API.",
        epilog="Commands (status, exchanges, symbols, enable/disable, restart, ohlcv, tail, "
        "config) arrive with the full HTTP API.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="feedd base URL")
    parser.add_argument("--version", action="version", version=f"feedctl {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
