"""Job leases on PostgreSQL (see feedd/store/lease.py): taken, renewed and expired on the
server's clock, so nodes whose clocks disagree still agree on who runs a job."""

from __future__ import annotations

import psycopg

from feedd.store.lease import KEEP_MS, Lease
from feedd.store.postgres.connection import Connection, store_error
from feedd.store.postgres.nodes import NOW_MS

#: takes or renews a lease: for its holder, or anyone once it expired
TAKE = (
    "INSERT INTO job_leases (job_id, node_id, expires_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (job_id) DO UPDATE SET node_id = excluded.node_id,"
    " expires_at = excluded.expires_at"
    " WHERE job_leases.node_id = excluded.node_id OR job_leases.expires_at <= %s"
)

#: schema step 3 (feedd/store/postgres/schema.py's MIGRATIONS)
DDL = """
CREATE TABLE IF NOT EXISTS job_leases (
    job_id text PRIMARY KEY,
    node_id text NOT NULL,
    expires_at bigint NOT NULL
)
"""


def take(conn: Connection, dsn: str, job_id: str, node_id: str, ttl_ms: int) -> Lease:
    """Take job ``job_id``'s lease for ``node_id`` (or renew it) for ``ttl_ms``, unless another
    node holds one not expired yet; returns the lease after, in one transaction. Two nodes
    asking at once queue on the row: one takes it, the other reads it taken."""
    try:
        with conn.transaction():
            (now,) = conn.execute("SELECT " + NOW_MS).fetchone() or (0,)
            conn.execute(TAKE, (job_id, node_id, now + ttl_ms, now))
            row = conn.execute(
                "SELECT node_id, expires_at FROM job_leases WHERE job_id = %s", (job_id,)
            ).fetchone()
            conn.execute("DELETE FROM job_leases WHERE expires_at < %s", (now - KEEP_MS,))
    except psycopg.Error as exc:
        raise store_error(exc, "cannot write to", dsn) from None
    assert row is not None
    return Lease(job_id, str(row[0]), int(row[1]), int(now))


def release(conn: Connection, dsn: str, job_id: str, node_id: str) -> None:
    """Give the lease up, if ``node_id`` still holds it."""
    try:
        with conn.transaction():
            conn.execute(
                "DELETE FROM job_leases WHERE job_id = %s AND node_id = %s", (job_id, node_id)
            )
    except psycopg.Error as exc:
        raise store_error(exc, "cannot write to", dsn) from None
