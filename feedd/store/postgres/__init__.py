"""PostgreSQL backend (psycopg 3); see feedd/store/backend.py for the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feedd.store.backend import Backend


def postgres_backend(dsn: str) -> Backend:
    from feedd.store.postgres.backend import PostgresBackend

    return PostgresBackend(dsn)
