"""Backfill jobs on collectors sharing one PostgreSQL (tests/pgserver.py): a saved job runs on
one node at a time under its lease, GET /backfill says which, and when the holder stops the
other node takes the job over from its saved progress; the store then equals the truth."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e import venue_urls
from test_pg_service import stored_closed

from feedd import config
from feedd.intervals import MINUTE_MS, floor_open
from feedd.jobs import lease
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.postgres import postgres_backend

pytest_plugins = ["pgserver"]

EX = "binance_futures"
DAY_MS = 86_400_000
#: nothing listens on the discard port: the archive is unreachable and jobs go over REST
CLOSED_PORT = "http://127.0.0.1:9"


class KlineLog:
    """Every klines request the simulated venue answers, by its start time."""

    def __init__(self, sim: Simulator) -> None:
        venue = sim.venues[EX]
        self.starts: list[int] = []
        handle = venue.handle_rest

        def counted(path: str, query: dict[str, str]) -> Any:
            if path.endswith("/klines"):
                self.starts.append(int(query.get("startTime", -1)))
            return handle(path, query)

        venue.handle_rest = counted  # type: ignore[method-assign]

    def repeated(self, since: int = 0) -> list[int]:
        """Start times asked for more than once (from request number ``since`` on)."""
        return sorted(t for t, n in Counter(self.starts[since:]).items() if n > 1)


@asynccontextmanager
async def node(sim: Simulator, dsn: str) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    # No live collection (only the job fetches), the archive out of reach (only REST).
    venue = {**venue_urls(sim, EX), "symbols": [], "enabled": False, "archive_url": CLOSED_PORT}
    cfg = config.parse(
        {
            "exchanges": {EX: venue},
            "intervals": ["1m"],
            "batch_interval": 50,
            "port": 0,
            "max_records": 0,
            "storage": {"backend": "postgresql", "dsn": dsn},
        }
    ).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, postgres_backend(dsn))
        )
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


@pytest.fixture
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases of seconds, not tens of seconds: the takeover happens within the test's time."""
    monkeypatch.setattr(lease, "LEASE_S", 3.0)
    monkeypatch.setattr(lease, "RENEW_S", 0.5)
    monkeypatch.setattr(lease, "POLL_S", 0.3)


def job_doc(service: Service, job_id: str) -> dict[str, Any]:
    jobs = service.state.jobs
    assert jobs is not None
    return jobs.document(jobs.get(job_id))


async def until(service: Service, job_id: str, predicate: Any, seconds: float = 60) -> None:
    """Wait until ``predicate(job document)`` holds on ``service``: checked after each save of
    a job there and each change of a lease holder seen there."""
    jobs = service.state.jobs
    assert jobs is not None

    def ok() -> bool:
        return job_id in jobs.jobs and bool(predicate(job_doc(service, job_id)))

    with trio.fail_after(seconds):
        while not ok():
            async with trio.open_nursery() as nursery:

                async def saved() -> None:
                    await jobs.wait_for(ok)
                    nursery.cancel_scope.cancel()

                async def holder() -> None:
                    await jobs.leases.wait_changed()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(saved)
                nursery.start_soon(holder)


def node_id(service: Service) -> str:
    jobs = service.state.jobs
    assert jobs is not None
    return jobs.leases.node_id


async def test_one_node_runs_a_shared_job_and_the_other_takes_it_over(
    pg_dsn: str, quick_leases: None
) -> None:
    settings = SimSettings(venues=(EX,), history_days=32)
    async with open_simulator(settings) as sim:
        klines = KlineLog(sim)
        now = sim.now_ms()
        since = floor_open("1m", now) - 30 * DAY_MS
        end = floor_open("1m", now) - MINUTE_MS
        async with node(sim, pg_dsn) as (a, a_client):
            response = await a_client.post(
                "/backfill",
                json={"exchange": EX, "symbols": ["BTCUSDT"], "interval": "1m",
                      "since": since, "until": end},
            )  # fmt: skip
            assert response.status_code == 201, response.text
            job = response.json()
            expected = job["rows_expected"]
            assert expected == 30 * 1440
            # The node that made it runs it, and says so.
            await until(a, job["id"], lambda d: d["node"] == node_id(a) and d["rows_done"] > 0)
            async with node(sim, pg_dsn) as (b, b_client):
                # b finds the saved job in the shared store and sees a running it: it waits.
                await until(b, job["id"], lambda d: d["node"] == node_id(a))
                listed = (await b_client.get("/backfill")).json()["jobs"]
                assert [(j["id"], j["node"]) for j in listed] == [(job["id"], node_id(a))]
                one = (await b_client.get(f"/backfill/{job['id']}")).json()
                assert one["node"] == node_id(a) and one["state"] in ("queued", "running")
                # a goes on alone: no range asked for twice while both run.
                await until(a, job["id"], lambda d: d["rows_done"] > expected // 3)
                assert klines.repeated() == []
                assert job_doc(b, job["id"])["rows_done"] <= job_doc(a, job["id"])["rows_done"]
                before_stop = len(klines.starts)
                assert before_stop >= 2
                # a stops mid-job (its lease given up); b takes the job over from a's progress.
                a.stop.set()
                await until(b, job["id"], lambda d: d["state"] == "done", 90)
                final = job_doc(b, job["id"])
        assert final["rows_done"] == final["rows_expected"] == expected
        # Taken over, not begun again: at most the page a was fetching when it stopped is
        # asked for again.
        assert len(klines.repeated()) <= 1, klines.repeated()
        after = klines.starts[before_stop:]
        assert after and min(after) > since
        truth = {t.open_time for t in sim_truth(sim, since, end)}
        stored = stored_closed(pg_dsn, "BTCUSDT")
        assert set(stored) >= truth and len(truth) == expected
        assert differences(sim, pg_dsn, since, end) == []


def sim_truth(sim: Simulator, start: int, end: int) -> list[Any]:
    out: list[Any] = []
    page = start
    while page <= end:
        last = min(end, page + 7 * DAY_MS - MINUTE_MS)
        out += sim.truth(EX, "BTCUSDT", "1m", page, last)
        page = last + MINUTE_MS
    return out


def differences(sim: Simulator, dsn: str, start: int, end: int) -> list[int]:
    """Open times in [start, end] where the store differs from the simulator's truth."""
    stored = stored_closed(dsn, "BTCUSDT")
    out = []
    for t in sim_truth(sim, start, end):
        row = (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades)
        if stored.get(t.open_time) != row:
            out.append(t.open_time)
    return out[:5]


async def test_the_job_of_a_sigkilled_holder_is_taken_over_when_its_lease_expires(
    tmp_path: Path, pg_dsn: str, quick_leases: None
) -> None:
    """The holder, a real process, is SIGKILLed: nothing gives its lease up. The other node
    takes the job when the lease expires (the dead node's ``LEASE_S``, at most 30 s) and
    finishes it from the progress saved with the candles."""
    from chaos.harness import FeeddProcess, config_doc, poll_until, write_config

    settings = SimSettings(venues=(EX,), history_days=32)
    async with open_simulator(settings) as sim:
        klines = KlineLog(sim)
        now = sim.now_ms()
        since = floor_open("1m", now) - 30 * DAY_MS
        end = floor_open("1m", now) - MINUTE_MS
        doc = config_doc(sim, {EX: []}, max_records=0)
        del doc["database_path"]
        doc["storage"] = {"backend": "postgresql", "dsn": pg_dsn}
        doc["exchanges"][EX].update(enabled=False, archive_url=CLOSED_PORT)
        holder = FeeddProcess(write_config(tmp_path / "config.json", doc), tmp_path / "a.log")
        # b first: it finds the job the holder makes at its next look at the saved jobs.
        async with node(sim, pg_dsn) as (b, _):
            try:
                await holder.start()
                async with httpx.AsyncClient(base_url=holder.url, timeout=10) as client:
                    response = await client.post(
                        "/backfill",
                        json={"exchange": EX, "symbols": ["BTCUSDT"], "interval": "1m",
                              "since": since, "until": end},
                    )  # fmt: skip
                    assert response.status_code == 201, response.text
                    job = response.json()
                    expected = job["rows_expected"]
                    await until(b, job["id"], lambda d: d["node"] not in (None, node_id(b)))
                    dead_node = job_doc(b, job["id"])["node"]

                    async def a_third() -> bool:
                        got = (await client.get(f"/backfill/{job['id']}")).json()
                        assert got["node"] == dead_node
                        return bool(got["rows_done"] > expected // 3)

                    await poll_until(a_third, 60, "the job to pass a third")
                    assert klines.repeated() == []
                    await holder.kill()
                killed_at = len(klines.starts)
                await until(b, job["id"], lambda d: d["node"] == node_id(b), 45)
                await until(b, job["id"], lambda d: d["state"] == "done", 90)
                final = job_doc(b, job["id"])
            finally:
                await holder.aclose()
        assert final["rows_done"] == final["rows_expected"] == expected
        assert len(klines.repeated()) <= 1, klines.repeated()
        assert min(klines.starts[killed_at:]) > since  # resumed, not begun again
        assert differences(sim, pg_dsn, since, end) == []
