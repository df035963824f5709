"""Nodes sharing one PostgreSQL agree with the store: a job deleted on one node leaves every
node's list, a cancel on one node stops the job where another node runs it, and a wipe of the
store on one node makes the others bootstrap their series again (the store then equals the
simulator's truth)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest
import trio
from e2e import feedd_config, truth_rows, venue_urls
from test_job_lease_pg import CLOSED_PORT, EX, KlineLog, job_doc, node, node_id, until
from test_pg_service import differences

from feedd import config
from feedd.intervals import MINUTE_MS, floor_open
from feedd.jobs import lease
from feedd.jobs.manager import JobManager
from feedd.service import Service, run_service
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.postgres import postgres_backend

pytest_plugins = ["pgserver"]

DAY_MS = 86_400_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases of seconds, looks at the saved jobs several times a second."""
    monkeypatch.setattr(lease, "LEASE_S", 3.0)
    monkeypatch.setattr(lease, "RENEW_S", 0.5)
    monkeypatch.setattr(lease, "POLL_S", 0.3)


def manager(service: Service) -> JobManager:
    jobs = service.state.jobs
    assert jobs is not None
    return jobs


def saved_jobs(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {str(i): str(d) for i, d in conn.execute("SELECT id, doc FROM jobs").fetchall()}


async def post_job(client: httpx.AsyncClient, since: int, until_ms: int) -> dict[str, Any]:
    response = await client.post(
        "/backfill",
        json={"exchange": EX, "symbols": ["BTCUSDT"], "interval": "1m", "since": since,
              "until": until_ms},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def test_a_job_deleted_on_one_node_leaves_the_list_of_the_other(
    pg_dsn: str, quick_leases: None
) -> None:
    async with open_simulator(SimSettings(venues=(EX,), history_days=3)) as sim:
        end = floor_open("1m", sim.now_ms()) - MINUTE_MS
        async with node(sim, pg_dsn) as (a, a_client), node(sim, pg_dsn) as (b, b_client):
            job = await post_job(a_client, end - DAY_MS, end)
            await until(a, job["id"], lambda d: d["state"] == "done")
            # Made on a, it shows on b from the store.
            await until(b, job["id"], lambda d: d["state"] == "done")
            assert [j["id"] for j in (await b_client.get("/backfill")).json()["jobs"]] == [
                job["id"]
            ]
            removed = await a_client.delete(f"/backfill/{job['id']}", headers=JSON)
            assert removed.status_code == 200 and removed.json()["removed"] is True
            jobs = manager(b)
            with trio.fail_after(30):
                await jobs.wait_for(lambda: job["id"] not in jobs.jobs)
            assert (await b_client.get("/backfill")).json()["jobs"] == []
            assert (await b_client.get(f"/backfill/{job['id']}")).status_code == 404


async def test_a_cancel_on_one_node_stops_the_job_where_the_other_runs_it(
    pg_dsn: str, quick_leases: None
) -> None:
    async with open_simulator(SimSettings(venues=(EX,), history_days=32)) as sim:
        klines = KlineLog(sim)
        end = floor_open("1m", sim.now_ms()) - MINUTE_MS
        async with node(sim, pg_dsn) as (a, a_client), node(sim, pg_dsn) as (b, b_client):
            job = await post_job(a_client, end - 30 * DAY_MS, end)
            await until(a, job["id"], lambda d: d["node"] == node_id(a) and d["rows_done"] > 0)
            await until(b, job["id"], lambda d: d["node"] == node_id(a))
            # Asked on b, applied on a (which runs it) before the answer: the cancel is whole.
            with trio.fail_after(30):
                cancelled = await b_client.delete(f"/backfill/{job['id']}", headers=JSON)
            assert cancelled.status_code == 200, cancelled.text
            doc = cancelled.json()
            assert doc["state"] == "cancelled" and doc["removed"] is False, doc
            ran = manager(a).get(job["id"])
            with trio.fail_after(30):
                await ran.ended.wait()
            assert job_doc(a, job["id"])["state"] == "cancelled"
            stopped_at = len(klines.starts)
            assert doc["rows_done"] < doc["rows_expected"]
            # The store keeps the cancelled job, and no request is left behind.
            saved = saved_jobs(pg_dsn)
            assert list(saved) == [job["id"]], saved
            assert '"state":"cancelled"' in saved[job["id"]]
            # Removed on b now, it leaves a's list too.
            removed = await b_client.delete(f"/backfill/{job['id']}", headers=JSON)
            assert removed.status_code == 200 and removed.json()["removed"] is True
            jobs = manager(a)
            with trio.fail_after(30):
                await jobs.wait_for(lambda: job["id"] not in jobs.jobs)
            assert len(klines.starts) == stopped_at  # nobody took the job up again


async def test_a_cancel_asked_while_no_node_runs_the_job_is_applied_by_the_next_holder(
    pg_dsn: str, quick_leases: None
) -> None:
    """The node running a job stopped (or died) before it saw the cancel asked elsewhere: the
    node that takes the job up applies the request before fetching anything."""
    async with open_simulator(SimSettings(venues=(EX,), history_days=32)) as sim:
        klines = KlineLog(sim)
        end = floor_open("1m", sim.now_ms()) - MINUTE_MS
        async with node(sim, pg_dsn) as (a, a_client):
            job = await post_job(a_client, end - 30 * DAY_MS, end)
            await until(a, job["id"], lambda d: d["rows_done"] > 0)
        # What DELETE on a node that does not run the job saves.
        request = {"kind": "backfill-cancel", "id": f"cancel-{job['id']}", "job": job["id"]}
        with psycopg.connect(pg_dsn) as conn:
            conn.execute(
                "INSERT INTO jobs (id, created_at, doc) VALUES (%s, %s, %s)",
                (request["id"], job["created_at"], json.dumps(request)),
            )
        stopped_at = len(klines.starts)
        async with node(sim, pg_dsn) as (b, _):
            await until(b, job["id"], lambda d: d["state"] == "cancelled")
            with trio.fail_after(30):
                await manager(b).get(job["id"]).ended.wait()
        assert len(klines.starts) == stopped_at
        saved = saved_jobs(pg_dsn)
        assert list(saved) == [job["id"]] and '"state":"cancelled"' in saved[job["id"]]


@asynccontextmanager
async def api_node(sim: Any, dsn: str) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    venue = {**venue_urls(sim, EX), "symbols": [], "enabled": False}
    cfg = config.parse(
        {"exchanges": {EX: venue}, "port": 0, "role": "api",
         "storage": {"backend": "postgresql", "dsn": dsn}}
    ).config  # fmt: skip
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, cfg, postgres_backend(dsn))
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


async def test_an_api_node_lists_the_jobs_and_cancels_one_a_collector_runs(
    pg_dsn: str, quick_leases: None
) -> None:
    async with open_simulator(SimSettings(venues=(EX,), history_days=32)) as sim:
        end = floor_open("1m", sim.now_ms()) - MINUTE_MS
        async with node(sim, pg_dsn) as (a, a_client), api_node(sim, pg_dsn) as (c, c_client):
            job = await post_job(a_client, end - 30 * DAY_MS, end)
            await until(c, job["id"], lambda d: d["rows_done"] > 0 and d["state"] == "running")
            listed = (await c_client.get("/backfill")).json()["jobs"]
            assert [j["id"] for j in listed] == [job["id"]]
            with trio.fail_after(30):
                cancelled = await c_client.delete(f"/backfill/{job['id']}", headers=JSON)
            assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
            with trio.fail_after(30):
                await manager(a).get(job["id"]).ended.wait()
            assert job_doc(a, job["id"])["state"] == "cancelled"


async def test_a_wipe_on_one_node_makes_the_other_bootstrap_again(
    pg_dsn: str, quick_leases: None
) -> None:
    """Both nodes collect the same series; b also runs a backfill job. a wipes the store: b
    fetches its bootstrap window again and stops and forgets its job (which would otherwise
    refill what the operator deleted, and resume from progress that is gone)."""
    async with open_simulator(SimSettings(venues=(EX,), history_days=32)) as sim:
        storage = {"backend": "postgresql", "dsn": pg_dsn}
        doc = feedd_config(sim, {EX: ["BTCUSDT"]}, storage=storage).to_json()
        doc["exchanges"][EX]["archive_url"] = CLOSED_PORT  # the job goes over REST: slowly
        cfg = config.parse(doc).config
        async with trio.open_nursery() as nursery:
            a: Service = await nursery.start(run_service, cfg, postgres_backend(pg_dsn))
            b: Service = await nursery.start(run_service, cfg, postgres_backend(pg_dsn))
            try:
                begun = sim.now_ms() // MINUTE_MS * MINUTE_MS
                with trio.fail_after(60):
                    await sim.sleep_until_ms(begun + 2 * MINUTE_MS + 500)
                    await equal_to_truth(b, sim, pg_dsn, begun - 10 * MINUTE_MS, begun)
                async with httpx.AsyncClient(base_url=b.url, timeout=30) as client:
                    job = await post_job(client, begun - 30 * DAY_MS, begun - DAY_MS)
                await until(b, job["id"], lambda d: d["node"] == node_id(b) and d["rows_done"])
                async with httpx.AsyncClient(base_url=a.url, timeout=30) as client:
                    wiped = await client.post("/deleteDatabase", json={"confirm": "DELETE"})
                assert wiped.status_code == 200, wiped.text
                jobs = manager(b)
                with trio.fail_after(60):
                    await jobs.wait_for(lambda: job["id"] not in jobs.jobs)
                assert saved_jobs(pg_dsn) == {}
                at = sim.now_ms() // MINUTE_MS * MINUTE_MS
                # a asked for the wipe and starts afresh; b collected the same series and
                # fetches again the history it bootstrapped, as the truth has it.
                with trio.fail_after(90):
                    await sim.sleep_until_ms(at + 2 * MINUTE_MS + 500)
                    await equal_to_truth(b, sim, pg_dsn, at - 12 * MINUTE_MS, at + MINUTE_MS)
                assert b.state.cluster is not None and a.state.cluster is not None
                assert a.state.cluster.nodes and all(
                    n.node_id != "~wipe" for n in b.state.cluster.nodes
                )
            finally:
                a.stop.set()
                b.stop.set()


async def equal_to_truth(service: Service, sim: Any, dsn: str, start: int, end: int) -> None:
    """Wait (on ``service``'s commits) until the stored closed candles in [start, end] are
    the truth."""
    truth = {"BTCUSDT": truth_rows(sim, EX, "BTCUSDT", start, end)}
    assert len(truth["BTCUSDT"]) == (end - start) // MINUTE_MS + 1
    with service.state.writer.open_commit_listener() as commits:
        while await trio.to_thread.run_sync(differences, truth, dsn):
            await commits.receive()
