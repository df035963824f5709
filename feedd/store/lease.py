"""Job leases: which node runs a saved job. A node takes a job's lease before running it,
renews it while it runs and gives it up at the end; on PostgreSQL (feedd/store/postgres/
lease.py) another node may take it only once it expired on the server's clock (its holder
died). A SQLite store is one machine's, one feedd's: its lease is always the asker's, so a
feedd restarted after a crash takes its jobs at once instead of waiting out its former self.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import attrs

from feedd.errors import StoreError

#: leases expired this long ago are deleted (their jobs were forgotten or wiped)
KEEP_MS = 86_400_000

#: added to feedd/store/schema.py's ensure_schema (no version bump: older feedd ignore it)
DDL = """
CREATE TABLE IF NOT EXISTS job_leases (
    job_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID
"""


@attrs.frozen
class Lease:
    """A job's lease as it stands after an attempt to take or renew it."""

    job_id: str
    #: the node holding it (the asking node's id when it was taken or renewed)
    node_id: str
    #: when it expires, epoch ms on the store's clock
    expires_at: int
    #: the store's clock at the attempt
    now: int


def wall_ms() -> int:
    return int(time.time() * 1000)


def take(
    conn: sqlite3.Connection, path: Path, job_id: str, node_id: str, ttl_ms: int,
    now_ms: int | None = None,
) -> Lease:  # fmt: skip
    """Take job ``job_id``'s lease for ``node_id`` (or renew it) for ``ttl_ms``: always granted
    (see the module docstring); returns it, saved in one transaction."""
    now = wall_ms() if now_ms is None else now_ms
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "INSERT INTO job_leases (job_id, node_id, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET node_id = excluded.node_id,"
                " expires_at = excluded.expires_at RETURNING node_id, expires_at",
                (job_id, node_id, now + ttl_ms),
            ).fetchone()
            conn.execute("DELETE FROM job_leases WHERE expires_at < ?", (now - KEEP_MS,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise _error(exc, path) from exc
    return Lease(job_id, str(row[0]), int(row[1]), now)


def release(conn: sqlite3.Connection, path: Path, job_id: str, node_id: str) -> None:
    """Give the lease up, if ``node_id`` still holds it."""
    try:
        conn.execute("DELETE FROM job_leases WHERE job_id = ? AND node_id = ?", (job_id, node_id))
    except sqlite3.Error as exc:
        raise _error(exc, path) from exc


def _error(exc: sqlite3.Error, path: Path) -> StoreError:
    from feedd.store.schema import store_error  # schema imports this module for DDL

    return store_error(exc, "cannot write to", path)
