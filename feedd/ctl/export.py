"""``feedctl export``: any range of a series into a file, streamed, with progress.

The file appears whole or not at all: the download goes to ``FILE.part``, which is renamed
over FILE only once the server finished sending it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from urllib.parse import quote

import orjson

from feedd.ctl.client import BadInput, Client
from feedd.ctl.progress import Progress
from feedd.intervals import CANONICAL_INTERVALS, is_interval

#: bytes from the end of what arrived searched for the last line's open time
_TAIL = 4096


def export(client: Client, args: argparse.Namespace) -> None:
    target = Path(args.output)
    if target.is_dir():
        raise BadInput(f"{target} is a folder; give a file name")
    part = target.with_name(target.name + ".part")
    path = "/" + "/".join(quote(p, safe="") for p in (args.exchange, args.symbol, args.interval))
    params: dict[str, object] = {"format": args.format, "since": args.since}
    if args.until is not None:
        params["until"] = args.until
    until = args.until if args.until is not None else int(time.time() * 1000)
    progress = Progress("rows" if args.format != "parquet" else "bytes")
    rows = received = 0
    try:
        with client.stream("/ohlcv" + path, params) as body, part.open("wb") as sink:
            for piece in body:
                sink.write(piece)
                received += len(piece)
                if args.format == "parquet":
                    progress.update(received)
                    continue
                rows += piece.count(b"\n")
                progress.update(rows, _share(piece, args.since, until))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        progress.finish()
    if args.format == "csv":
        rows -= 1  # the header
    seconds = time.monotonic() - progress.started
    summary = {
        "file": str(target),
        "format": args.format,
        "bytes": received,
        "rows": None if args.format == "parquet" else rows,
        "seconds": round(seconds, 3),
    }
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        counted = "" if summary["rows"] is None else f"{rows:,} rows, "
        print(f"wrote {counted}{received:,} bytes to {target} in {seconds:.1f} s")


def _share(piece: bytes, since: int, until: int) -> float | None:
    """How far through [since, until] the last complete line of ``piece`` is."""
    tail = piece[-_TAIL:]
    end = tail.rfind(b"\n")
    start = tail.rfind(b"\n", 0, end) + 1
    line = tail[start:end]
    digits = line.removeprefix(b'{"open_time":')
    stamp = digits[: len(digits) - len(digits.lstrip(b"0123456789"))]
    if not stamp or until <= since:
        return None
    return (int(stamp) - since) / (until - since)


def interval_name(text: str) -> str:
    if not is_interval(text):
        raise argparse.ArgumentTypeError(
            f"unknown interval {text!r} (one of {' '.join(CANONICAL_INTERVALS)})"
        )
    return text
