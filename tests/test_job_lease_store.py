"""Job leases through the store interface. PostgreSQL: taken, renewed, refused to another node
until given up or expired (on the server's clock), taken by exactly one of two nodes asking at
once. SQLite (one feedd): always the asker's, and one feedd runs its jobs under it."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import orjson
import psycopg
import pytest
import trio

from feedd.candle import Candle
from feedd.jobs import lease
from feedd.jobs.lease import JobLeases
from feedd.jobs.model import Job, SymbolJob
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.backend import Backend, WriteConnection
from feedd.store.lease import Lease
from feedd.store.postgres import postgres_backend
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings

pytest_plugins = ["pgserver"]

MINUTE = 60_000
DAY_MS = 86_400_000


def open_writer(backend: Backend) -> WriteConnection:
    backend.prepare()
    return backend.open_writer(busy_timeout_ms=5000)


def test_taken_renewed_refused_released(pg_dsn: str) -> None:
    backend = postgres_backend(pg_dsn)
    a, b = open_writer(backend), open_writer(backend)
    try:
        taken = a.lease_job("j1", "A", MINUTE)
        assert taken.node_id == "A" and taken.expires_at - taken.now == MINUTE
        # Another node is refused and told who holds it, until when.
        refused = b.lease_job("j1", "B", MINUTE)
        assert (refused.node_id, refused.expires_at) == ("A", taken.expires_at)
        # The holder renews: later expiry.
        renewed = a.lease_job("j1", "A", 2 * MINUTE)
        assert renewed.node_id == "A" and renewed.expires_at > taken.expires_at
        # Another job is free.
        assert b.lease_job("j2", "B", MINUTE).node_id == "B"
        # Given up by someone else than the holder: nothing happens.
        b.release_job("j1", "B")
        assert b.lease_job("j1", "B", MINUTE).node_id == "A"
        a.release_job("j1", "A")
        assert b.lease_job("j1", "B", MINUTE).node_id == "B"
        assert a.lease_job("j1", "A", MINUTE).node_id == "B"
    finally:
        a.close()
        b.close()


def test_an_expired_lease_is_taken_over(pg_dsn: str) -> None:
    """A holder that died renews nothing: once its lease ran out (here at once: no time to
    wait), another node takes the job; the dead holder, back, is refused."""
    backend = postgres_backend(pg_dsn)
    a, b = open_writer(backend), open_writer(backend)
    try:
        dead = a.lease_job("j", "A", 0)
        assert dead.node_id == "A"
        took = b.lease_job("j", "B", MINUTE)
        assert isinstance(took, Lease) and took.node_id == "B" and took.now >= dead.now
        assert a.lease_job("j", "A", MINUTE).node_id == "B"
    finally:
        a.close()
        b.close()


def test_sqlite_grants_the_lease_to_whoever_asks(tmp_path: Path) -> None:
    """One feedd per SQLite file: a feedd restarted after a SIGKILL (a new node id) takes its
    jobs at once rather than waiting out the lease of its former self."""
    backend = SqliteBackend(tmp_path / "ohlcv.db")
    db = open_writer(backend)
    try:
        before = db.lease_job("j", "before-the-crash", MINUTE)
        after = db.lease_job("j", "restarted", MINUTE)
        assert (before.node_id, after.node_id) == ("before-the-crash", "restarted")
        assert after.expires_at - after.now == MINUTE
        db.release_job("j", "restarted")
        with closing(sqlite3.connect(backend.path)) as conn:
            assert conn.execute("SELECT count(*) FROM job_leases").fetchone() == (0,)
    finally:
        db.close()


async def test_two_nodes_asking_at_once_one_wins(pg_dsn: str) -> None:
    backend = postgres_backend(pg_dsn)
    writers = [open_writer(backend) for _ in range(2)]
    jobs = [f"job{i}" for i in range(30)]
    got: dict[str, list[str]] = {"A": [], "B": []}
    start = threading.Barrier(2)

    def ask(writer: WriteConnection, name: str) -> None:
        start.wait()
        for job in jobs:
            got[name].append(writer.lease_job(job, name, MINUTE).node_id)

    try:
        async with trio.open_nursery() as nursery:
            for writer, name in zip(writers, "AB", strict=True):
                nursery.start_soon(trio.to_thread.run_sync, ask, writer, name)
    finally:
        for writer in writers:
            writer.close()
    # Each job has one holder, and both nodes were told the same one.
    assert got["A"] == got["B"]
    assert set(got["A"]) <= {"A", "B"}


async def test_one_sqlite_node_runs_its_jobs_under_its_own_lease(tmp_path: Path) -> None:
    """The same code path on one box: the job runs at once, GET /backfill names this node
    (the id /status lists), and the lease is given up when the job ends."""
    from test_backfill_jobs import (
        exchanges_doc,
        feedd_with_jobs,
        finished,
        no_archive,
        start_job,
    )

    settings = SimSettings(venues=("binance_futures",), history_days=3)
    async with open_simulator(settings) as sim:
        doc = exchanges_doc(sim, {}, **no_archive(sim))
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            cluster, jobs = service.state.cluster, service.state.jobs
            assert cluster is not None and jobs is not None
            me = cluster.identity.node_id
            now = sim.now_ms()
            job = await start_job(client, exchange="binance_futures", symbols=["BTCUSDT"],
                                  interval="1m", since=now - 2 * DAY_MS, until=now)  # fmt: skip
            # Checked at a save of the running job (it may end before a request would land).
            with trio.fail_after(30):
                await jobs.wait_for(lambda: jobs.document(jobs.get(job["id"]))["node"] == me)
            done = await finished(service, job["id"])
            assert done["state"] == "done"
            listed = (await client.get("/backfill")).json()["jobs"]
            assert [(j["id"], j["node"]) for j in listed] == [(job["id"], None)]
        with closing(sqlite3.connect(tmp_path / "ohlcv.db")) as conn:
            assert conn.execute("SELECT count(*) FROM job_leases").fetchone() == (0,)


async def test_a_holder_that_lost_its_lease_stops_and_waits(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease moved to another node while this one ran the job (it could not renew in
    time): the next renewal sees it, the job's work is cancelled, and the node waits; once
    the other gives it up, this node takes the job again and runs it to the end."""
    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    backend = postgres_backend(pg_dsn)
    writer = Writer(WriterSettings(backend, 50, 1000))
    send, recv = trio.open_memory_channel[list[Candle]](1)
    job = Job("j1", "binance_futures", "1m", 0, MINUTE, 0, [SymbolJob("BTCUSDT")], 0)
    runs: list[str] = []
    first_started, release_second = trio.Event(), trio.Event()

    async def body() -> None:
        runs.append("started")
        if len(runs) == 1:
            first_started.set()
            await trio.sleep_forever()  # cancelled when the lease is lost
        await release_second.wait()
        runs.append("finished")

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run, recv)
        await writer.write_job([], job.id, 0, orjson.dumps(job.record()).decode())
        leases = JobLeases(writer, "A")
        done: list[bool] = []

        async def run() -> None:
            done.append(await leases.run(job, body))

        nursery.start_soon(run)
        with trio.fail_after(30):
            await first_started.wait()
            assert leases.holder(job.id) == "A"
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("UPDATE job_leases SET node_id = 'B' WHERE job_id = %s", (job.id,))
            while leases.holder(job.id) != "B":
                await leases.wait_changed()
            assert runs == ["started"]  # cancelled, not run again while B holds it
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM job_leases WHERE job_id = %s", (job.id,))
            while leases.holder(job.id) != "A":
                await leases.wait_changed()
            release_second.set()
            while not done:
                await leases.wait_changed()
        assert done == [True] and runs == ["started", "started", "finished"]
        await send.aclose()
