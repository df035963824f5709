"""PostgreSQL backend (psycopg 3); see feedd/store/backend.py for the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from feedd.errors import StoreError

if TYPE_CHECKING:
    from feedd.store.backend import Backend


def postgres_backend(dsn: str) -> Backend:
    raise StoreError("the postgresql backend is not available in this build yet")
