"""``feedctl backfill``: start a backfill job and follow it, list jobs, cancel one.

Following polls ``GET /backfill/<id>``; the bar shows the server's own figures (rows stored of
those expected, rows per second, time left). Ctrl-C stops following, never the job.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from feedd.ctl import text
from feedd.ctl.client import BadInput, Client, Refused, api_path, decode
from feedd.ctl.commands import emit
from feedd.ctl.progress import Progress, _duration

#: seconds between two looks at a followed job
POLL_S = 0.5
FINISHED = ("done", "failed", "cancelled")


class JobProgress(Progress):
    """Progress drawn from the job document rather than counted here."""

    def __init__(self, unit: str) -> None:
        super().__init__(unit)
        self.doc: dict[str, Any] = {}

    def describe(self, done: float, share: float | None, now: float | None = None) -> str:
        doc = self.doc
        expected = doc.get("rows_expected") or 0
        share = min(1.0, done / expected) if expected else None
        parts = [f"{doc.get('state', '?'):9}"]
        if share is not None:
            filled = round(share * 28)
            parts.append("[" + "#" * filled + "-" * (28 - filled) + f"] {share * 100:5.1f}%")
        parts.append(f"{text.count(done)}/{text.count(expected)} rows")
        parts.append(f"{text.count(doc.get('rate_per_s') or 0)} rows/s")
        eta = doc.get("eta_s")
        if eta is not None and doc.get("state") == "running":
            parts.append(f"ETA {_duration(eta)}")
        return "  ".join(parts)


def run(client: Client, args: argparse.Namespace) -> None:
    words: list[str] = args.words
    if words[0] == "list" and len(words) == 1:
        return list_jobs(client, args)
    if words[0] == "cancel":
        if len(words) != 2:
            raise BadInput("usage: feedctl backfill cancel ID")
        return cancel(client, args, words[1])
    if len(words) < 2:
        raise BadInput(
            "usage: feedctl backfill EXCHANGE SYMBOL... --since TIME (or list, cancel ID)"
        )
    if args.since is None:
        raise BadInput("--since is required to start a backfill (e.g. --since 2023-01-01)")
    body: dict[str, Any] = {
        "exchange": words[0],
        "symbols": [s.upper() for s in words[1:]],
        "interval": args.interval,
        "since": args.since,
    }
    if args.until is not None:
        body["until"] = args.until
    job = client.post("/backfill", body)
    if args.detach:
        print(job["id"])
        return None
    if not args.json:
        print(
            f"backfill job {job['id']} started; Ctrl-C stops following, not the job",
            file=sys.stderr,
        )
    follow(client, args, job)
    return None


def follow(client: Client, args: argparse.Namespace, job: dict[str, Any]) -> None:
    progress = JobProgress("rows")
    started = time.monotonic()
    path = api_path("backfill", job["id"])
    try:
        while True:
            progress.doc = job
            progress.update(job.get("rows_done", 0), force=job["state"] in FINISHED)
            if job["state"] in FINISHED:
                break
            time.sleep(POLL_S)
            job = client.get(path)
    except KeyboardInterrupt:
        progress.finish()
        print(
            f"stopped following; job {job['id']} goes on (feedctl backfill cancel {job['id']})",
            file=sys.stderr,
        )
        raise
    progress.finish()
    if args.json:
        print(orjson.dumps(job).decode())
    else:
        sources = job.get("sources", {})
        rest, archive = text.count(sources.get("rest", 0)), text.count(sources.get("archive", 0))
        print(
            f"job {job['id']} {job['state']}: {text.count(job.get('rows_done'))} of "
            f"{text.count(job.get('rows_expected'))} rows stored (fetched: rest {rest}, "
            f"archive {archive}) in {time.monotonic() - started:.1f} s"
        )
        for error in job.get("errors", [])[-3:]:
            print(f"  error: {error}")
    if job["state"] != "done":
        raise Refused(f"backfill job {job['id']} {job['state']}")


def list_jobs(client: Client, args: argparse.Namespace) -> None:
    response = client.get_raw("/backfill")
    if args.json:
        return emit(response.content)
    jobs: list[dict[str, Any]] = decode(response).get("jobs", [])
    if not jobs:
        print("no backfill jobs")
        return None
    rows = []
    for job in jobs:
        expected = job.get("rows_expected") or 0
        share = f"{100 * job.get('rows_done', 0) / expected:.1f}%" if expected else text.NONE
        eta = job.get("eta_s")
        rows.append(
            [
                str(job.get("id")),
                str(job.get("exchange")),
                ",".join(job.get("symbols", [])),
                str(job.get("interval")),
                text.utc(job.get("since")),
                text.utc(job.get("until")),
                str(job.get("state")),
                text.count(job.get("rows_done")),
                share,
                text.NONE if eta is None else _duration(eta),
            ]
        )
    headers = ["ID", "EXCHANGE", "SYMBOLS", "INTERVAL", "SINCE (UTC)", "UNTIL (UTC)", "STATE",
               "ROWS", "DONE", "ETA"]  # fmt: skip
    print(text.table(headers, rows, right=(7, 8, 9)))
    return None


def cancel(client: Client, args: argparse.Namespace, job_id: str) -> None:
    job = client.delete(api_path("backfill", job_id))
    if args.json:
        print(orjson.dumps(job).decode())
    elif job.get("removed"):
        print(f"job {job_id} ({job.get('state')}) removed from the list")
    else:
        print(f"job {job_id} cancelled at {text.count(job.get('rows_done'))} rows")
