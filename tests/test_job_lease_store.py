"""Job leases through the store interface, over SQLite and PostgreSQL: taken, renewed, refused
to another node until given up or expired (on the store's clock), and on PostgreSQL taken by
exactly one of two nodes asking at once."""

from __future__ import annotations

import threading

import trio

from feedd.store.backend import Backend, WriteConnection
from feedd.store.lease import Lease
from feedd.store.postgres import postgres_backend

pytest_plugins = ["store_backends"]

MINUTE = 60_000


def open_writer(backend: Backend) -> WriteConnection:
    backend.prepare()
    return backend.open_writer(busy_timeout_ms=5000)


def test_taken_renewed_refused_released(backend: Backend) -> None:
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


def test_an_expired_lease_is_taken_over(backend: Backend) -> None:
    """A holder that died renews nothing: once its lease ran out (here at once: no time to
    wait), another node takes the job; the dead holder, back, is refused."""
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
