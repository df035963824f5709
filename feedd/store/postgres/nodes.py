"""The cluster's nodes on PostgreSQL (see feedd/store/nodes.py): one row per running feedd,
upserted at each heartbeat stamped with the server's clock (the nodes' clocks may disagree);
rows silent for a day deleted by the next heartbeat of any node."""

from __future__ import annotations

import psycopg

from feedd.store.nodes import KEEP_MS, NodeRecord
from feedd.store.postgres.connection import Connection, store_error

#: schema step 2 (feedd/store/postgres/schema.py's MIGRATIONS)
DDL = """
CREATE TABLE IF NOT EXISTS nodes (
    id text PRIMARY KEY,
    at_ms bigint NOT NULL,
    doc text NOT NULL
)
"""


#: the server's clock in epoch milliseconds (the time of the statement, not the transaction's)
NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def record(conn: Connection, dsn: str, node_id: str, doc: str, at_ms: int) -> int:
    """Save one heartbeat stamped with the server's clock (``at_ms``, the node's, is not
    used) and forget nodes silent for a day, in one transaction; returns the stamp."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO nodes (id, at_ms, doc) VALUES (%s, " + NOW_MS + ", %s)"
                " ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms, doc = excluded.doc"
                " RETURNING at_ms",
                (node_id, doc),
            ).fetchone()
            assert row is not None
            stamp = int(row[0])
            conn.execute("DELETE FROM nodes WHERE at_ms < %s", (stamp - KEEP_MS,))
    except psycopg.Error as exc:
        raise store_error(exc, "cannot write to", dsn) from None
    return stamp


def read(conn: Connection) -> list[NodeRecord]:
    """Every known node, the most recently heard first (psycopg errors are the caller's)."""
    rows = conn.execute("SELECT id, at_ms, doc FROM nodes ORDER BY at_ms DESC, id").fetchall()
    return [NodeRecord(str(node_id), int(at_ms), str(doc)) for node_id, at_ms, doc in rows]
