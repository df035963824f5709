"""``feedctl coverage``: which candles each series holds and which are missing."""

from __future__ import annotations

import argparse
from typing import Any

from feedd.ctl import text
from feedd.ctl.client import Client, decode
from feedd.ctl.commands import emit

#: holes listed per series before "... and N more"
HOLES_SHOWN = 20


def coverage(client: Client, args: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    for name in ("exchange", "symbol", "interval"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.missing_only:
        params["missing_only"] = "true"
    response = client.get_raw("/coverage", params)
    if args.json:
        return emit(response.content)
    series: list[dict[str, Any]] = decode(response).get("series", [])
    if not series:
        print("no closed candles stored" + (" with holes" if args.missing_only else ""))
        return
    rows = [
        [
            str(s.get("exchange")),
            str(s.get("symbol")),
            str(s.get("interval")),
            text.utc(s.get("first_open_time")),
            text.utc(s.get("last_open_time")),
            text.count(s.get("candles")),
            text.count(s.get("missing_candles")),
            text.count(len(s.get("missing", []))),
        ]
        for s in series
    ]
    headers = ["EXCHANGE", "SYMBOL", "INTERVAL", "FIRST (UTC)", "LAST (UTC)", "CANDLES",
               "MISSING", "HOLES"]  # fmt: skip
    print(text.table(headers, rows, right=(5, 6, 7)))
    detailed = len(series) == 1 or args.missing_only
    for s in series if detailed else ():
        holes = s.get("missing", [])
        if not holes and "sources" not in s:
            continue
        print(f"\n{s.get('exchange')} {s.get('symbol')} {s.get('interval')}:")
        sources = s.get("sources")
        if sources:
            print("  sources: " + ", ".join(f"{k} {text.count(v)}" for k, v in sources.items()))
        for hole in holes[:HOLES_SHOWN]:
            print(
                f"  missing {text.utc(hole['start'])} .. {text.utc(hole['end'])}"
                f"  ({text.count(hole['candles'])} candles)"
            )
        if len(holes) > HOLES_SHOWN:
            print(f"  ... and {len(holes) - HOLES_SHOWN} more holes (--json lists them all)")
