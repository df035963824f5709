"""Backfill jobs end to end: feedd against the simulator, the store compared with its truth."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from e2e import stored_closed

from feedd import config, exchanges
from feedd.intervals import MINUTE_MS, floor_open
from feedd.jobs.manager import JobManager
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

DAY_MS = 86_400_000
JSON = {"Content-Type": "application/json"}


def exchanges_doc(sim: Simulator, live: dict[str, list[str]], **more: dict[str, Any]) -> dict:
    """Every venue of ``sim`` pointed at it; venues not in ``live`` are disabled."""
    return {
        name: {
            "symbols": live.get(name, []),
            "enabled": name in live,
            "ws_url": venue.ws_url,
            "rest_url": venue.rest_url,
            "silence_timeout": 3,
            **more.get(name, {}),
        }
        for name, venue in sim.venues.items()
    }


@asynccontextmanager
async def feedd_with_jobs(
    tmp_path: Path,
    sim: Simulator,
    live: dict[str, list[str]],
    **extra: Any,
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    doc: dict[str, Any] = {
        "exchanges": exchanges_doc(sim, live),
        "intervals": ["1m"],
        "bootstrap_load": 20,
        "batch_interval": 50,
        "port": 0,
        "max_records": 0,
    }
    doc.update(extra)
    cfg = config.parse(doc).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db")
        )
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


def manager(service: Service) -> JobManager:
    assert service.state.jobs is not None
    return service.state.jobs


async def start_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/backfill", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def finished(service: Service, job_id: str) -> dict[str, Any]:
    jobs = manager(service)
    await jobs.wait_for(lambda: jobs.jobs[job_id].state not in ("queued", "running"))
    return jobs.jobs[job_id].document()


def differences(
    sim: Simulator, db: Path, exchange: str, symbol: str, start: int, end: int
) -> list[str]:
    truth = {}
    page_start = start
    while page_start <= end:
        # The simulator answers at most TRUTH_MAX_ROWS at a time: ask a week at a time.
        page_end = min(end, page_start + 7 * DAY_MS - MINUTE_MS)
        for t in sim.truth(exchange, symbol, "1m", page_start, page_end):
            truth[t.open_time] = (
                t.open,
                t.high,
                t.low,
                t.close,
                t.volume,
                t.quote_volume,
                t.trades,
            )
        page_start = page_end + MINUTE_MS
    stored = {
        t: r for t, r in stored_closed(db, exchange, symbol, "1m").items() if start <= t <= end
    }
    out = [f"{t} missing" for t in sorted(set(truth) - set(stored))][:5]
    out += [f"{t} not in truth" for t in sorted(set(stored) - set(truth))][:5]
    out += [f"{t} differs" for t in sorted(set(truth) & set(stored)) if truth[t] != stored[t]][:5]
    return out


def raise_budget(monkeypatch: pytest.MonkeyPatch, name: str, factor: float) -> None:
    """The simulator's clock runs 60x: its limits are per sim minute, i.e. 60x the venue's
    per real minute. Tests that fetch months raise feedd's budget toward that."""
    module = exchanges.get(name)
    limits = attrs.evolve(
        module.LIMITS, rest_weight_per_minute=int(module.LIMITS.rest_weight_per_minute * factor)
    )
    monkeypatch.setattr(module, "LIMITS", limits)


@pytest.mark.parametrize(
    ("exchange", "days", "factor"),
    [("bybit_futures", 31, 1.0), ("okx_futures", 31, 12.0)],
)
async def test_a_month_of_1m_equals_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: str, days: int, factor: float
) -> None:
    raise_budget(monkeypatch, exchange, factor)
    settings = SimSettings(venues=(exchange,), history_days=days + 2)
    # Live ingest of the venue disabled (no symbols live): a job runs all the same.
    async with (
        open_simulator(settings) as sim,
        feedd_with_jobs(tmp_path, sim, {}) as (
            service,
            client,
        ),
    ):
        now = sim.now_ms()
        since = floor_open("1m", now) - days * DAY_MS
        # The simulator's clock is not the wall clock: until is its now.
        job = await start_job(
            client,
            exchange=exchange,
            symbols=["BTCUSDT"],
            interval="1m",
            since=since,
            until=now,
        )
        assert job["state"] in ("queued", "running")
        assert job["rows_expected"] >= days * 1440
        done = await finished(service, job["id"])
        assert done["state"] == "done", done
        assert done["rows_done"] == done["rows_expected"]
        assert done["per_symbol"][0]["state"] == "done"
        assert done["sources"]["rest"] == done["rows_done"]
        assert done["finished_at"] is not None and done["eta_s"] == 0
        end = floor_open("1m", job["until"]) - MINUTE_MS
        assert differences(sim, tmp_path / "ohlcv.db", exchange, "BTCUSDT", since, end) == []
        listed = (await client.get("/backfill")).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]


#: a year (525,600 candles) passes in ~60 s here; the suite keeps to a quarter
DAYS = 92


async def test_months_of_binance_from_archives_and_rest_equal_the_truth(tmp_path: Path) -> None:
    settings = SimSettings(venues=("binance_futures",), history_days=DAYS + 5)
    async with open_simulator(settings) as sim:
        venue = sim.venues["binance_futures"]
        archive = {"binance_futures": {"archive_url": venue.archive_url}}  # type: ignore[attr-defined]
        doc = exchanges_doc(sim, {}, **archive)
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            now = sim.now_ms()
            since = floor_open("1m", now) - DAYS * DAY_MS
            job = await start_job(
                client,
                exchange="binance_futures",
                symbols=["BTCUSDT"],
                interval="1m",
                since=since,
                until=now,
            )
            done = await finished(service, job["id"])
            assert done["state"] == "done", done
            # until is the candle opening at ``now`` (inclusive): the job waits for its close.
            assert done["rows_done"] == done["rows_expected"] == DAYS * 1440 + 1
            # Whole days from the archive; today's part (after the last daily file) over REST.
            assert done["sources"]["archive"] > (DAYS - 1) * 1440
            assert 0 < done["sources"]["rest"] <= 1440
            db = tmp_path / "ohlcv.db"
            diff = differences(sim, db, "binance_futures", "BTCUSDT", since, floor_open("1m", now))
            assert diff == []
