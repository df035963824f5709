"""The cluster's nodes as the store keeps them: one row per running feedd, its latest heartbeat.

Every node (a collector, an API node, a one-box feedd) upserts its row every few seconds;
rows not refreshed for ``KEEP_MS`` are deleted by the next heartbeat of any node. A heartbeat
is stamped with the store's clock, one clock for every node: on SQLite (one machine) that is
the clock of the machine, which the caller reads; PostgreSQL uses the server's.
"""

from __future__ import annotations

import sqlite3

import attrs

#: a node silent this long is forgotten (its row deleted)
KEEP_MS = 86_400_000
#: not a node: the row a wipe of the store leaves (doc ``{"wipe": TOKEN}``, a new token at each
#: wipe), read by every node with the heartbeats to learn that the store lost its history
WIPE_ID = "~wipe"

DDL = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID
"""


@attrs.frozen
class NodeRecord:
    """A node's latest heartbeat: when (epoch ms, the store's clock) and its status (JSON)."""

    node_id: str
    at_ms: int
    doc: str


def record(conn: sqlite3.Connection, node_id: str, doc: str, at_ms: int) -> int:
    """Save one heartbeat stamped ``at_ms`` (this machine's clock is the store's) and forget
    nodes silent for a day, in one transaction; returns the stamp."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO nodes (id, at_ms, doc) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms, doc = excluded.doc",
            (node_id, at_ms, doc),
        )
        conn.execute("DELETE FROM nodes WHERE at_ms < ?", (at_ms - KEEP_MS,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return at_ms


def read(conn: sqlite3.Connection) -> list[NodeRecord]:
    """Every known node, the most recently heard first."""
    rows = conn.execute("SELECT id, at_ms, doc FROM nodes ORDER BY at_ms DESC, id").fetchall()
    return [NodeRecord(node_id, at_ms, doc) for node_id, at_ms, doc in rows]
