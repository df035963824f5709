"""``feedctl tail --nats``: replay then follow candles from the NATS JetStream stream.

asyncio (nats-py) in its own ``asyncio.run``: the command is a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Protocol

from feedd import config
from feedd.config import NatsConfig
from feedd.ctl.client import Refused, Unreachable
from feedd.errors import ConfigError
from feedd.publish import wire
from feedd.publish.connect import NATS_ERRORS
from feedd.publish.consumer import consume


class Shows(Protocol):
    @property
    def done(self) -> bool: ...

    def show(self, candle: dict[str, Any]) -> None: ...


def settings(args: argparse.Namespace) -> NatsConfig:
    section = {"url": args.nats, "subject_prefix": args.prefix, "stream": args.stream}
    try:
        parsed = config.parse({"publish": {"nats": section}}, os.environ).config.publish
    except ConfigError as exc:
        raise Refused(f"--nats: {exc.problem}") from None
    assert parsed is not None and parsed.nats is not None
    return parsed.nats


def run(args: argparse.Namespace, printer: Shows) -> None:
    nats = settings(args)
    subject = args.subject or wire.subjects_filter(
        nats.subject_prefix, args.exchange, args.symbol, args.interval
    )
    finished = asyncio.Event()

    def on_candle(_subject: str, candle: dict[str, Any]) -> None:
        printer.show(candle)
        sys.stdout.flush()
        if printer.done:
            finished.set()

    async def main() -> None:
        task = asyncio.ensure_future(consume(nats, on_candle, subject=subject, since_ms=args.since))
        stop = asyncio.ensure_future(finished.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stop):
            pending.cancel()
        if task in done:
            task.result()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return
    except NATS_ERRORS as exc:
        raise Unreachable(f"cannot read NATS {config.redacted_url(nats.url)}: {exc}") from None
