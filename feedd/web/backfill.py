"""Backfill job routes: start a job, list jobs, read one, cancel one (or forget a finished one).

Bodies follow the other state-changing routes (JSON objects, same-origin, checked by
``feedd.web.security``); the job document's shape is in docs/API.md.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from feedd import exchanges
from feedd.errors import FeeddError
from feedd.jobs.manager import JobError, JobManager
from feedd.symbols import RULE, is_symbol
from feedd.web import body, params
from feedd.web.errors import ApiError, json_response
from feedd.web.state import current_state as state

backfill = Blueprint("backfill", __name__)

#: symbols one job may name
MAX_SYMBOLS = 100


def _jobs() -> JobManager:
    jobs = state().jobs
    if jobs is None:
        raise ApiError(503, "backfill jobs are not running in this process")
    return jobs


@backfill.errorhandler(JobError)
async def job_error(exc: JobError) -> Response:
    return json_response(
        {"error": exc.message, **({"field": exc.field} if exc.field else {})}, exc.status
    )


def _time(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be a time in epoch milliseconds (a whole number)", name)
    if not 0 <= value <= params.MAX_TIME_MS:
        raise ApiError(400, f"{name} must be between 0 and {params.MAX_TIME_MS}", name)
    return value


@backfill.post("/backfill")
async def create() -> Response:
    data = await body.json_object()
    jobs = _jobs()
    exchange = params.exchange_name(body.string_field(data, "exchange"))
    symbols = body.string_list(data, "symbols", MAX_SYMBOLS)
    if not symbols:
        raise ApiError(400, f"symbols must list 1 to {MAX_SYMBOLS} symbols", "symbols")
    for index, symbol in enumerate(symbols):
        if not is_symbol(symbol):
            raise ApiError(400, f"malformed symbol {symbol[:40]!r} ({RULE})", f"symbols[{index}]")
    symbols = list(dict.fromkeys(symbols))
    interval = params.interval(body.string_field(data, "interval"))
    if interval not in exchanges.get(exchange).INTERVALS:
        raise ApiError(400, f"{exchange} has no {interval} candles", "interval")
    since = _time(data, "since")
    if since is None:
        raise ApiError(400, "since is required (epoch milliseconds)", "since")
    until = _time(data, "until")
    # The venue's clock, not ours: what has closed is the venue's to say (a simulator's
    # clock may be months from the wall clock).
    venue_ms = await jobs.venue_now(exchange)
    until = venue_ms if until is None else until
    if since >= until:
        raise ApiError(400, "since must be before until", "since")
    jobs.check_retention(interval, since, until, venue_ms)
    await _check_listed(exchange, symbols)
    job = await jobs.create(exchange, symbols, interval, since, until, venue_ms)
    return json_response(jobs.document(job), 201)


async def _check_listed(exchange: str, symbols: list[str]) -> None:
    """Refuse symbols the venue does not list, when its list can be had (as POST
    /exchangeSymbols does); without it the job itself meets the venue's refusal."""
    try:
        listed = (await state().controller.listing(exchange)).symbols
    except FeeddError:
        return
    for index, symbol in enumerate(symbols):
        if symbol not in listed:
            raise ApiError(400, f"{exchange} does not list {symbol}", f"symbols[{index}]")


@backfill.get("/backfill")
async def list_jobs() -> Response:
    jobs = _jobs()
    return json_response({"jobs": [jobs.document(job) for job in jobs.jobs.values()]})


@backfill.get("/backfill/<job_id>")
async def get_job(job_id: str) -> Response:
    jobs = _jobs()
    return json_response(jobs.document(jobs.get(job_id)))


@backfill.delete("/backfill/<job_id>")
async def cancel_job(job_id: str) -> Response:
    jobs = _jobs()
    job, removed, pending = await jobs.cancel(job_id)
    if pending:
        # Another node runs it and has not stopped it yet: it will, at its next look at the
        # saved jobs (or the node taking the job over, if it died).
        return json_response(
            {**jobs.document(job), "removed": False, "cancel_requested": True}, 202
        )
    return json_response({**jobs.document(job), "removed": removed})
