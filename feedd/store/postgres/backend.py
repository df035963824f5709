"""The PostgreSQL backend: a server at a DSN, its writer connection and its readers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from feedd.store.postgres.connection import location, parse

if TYPE_CHECKING:
    from feedd.store.backend import Backend, ReadStore
    from feedd.store.postgres.writer import PgWriteConnection


class PostgresBackend:
    kind = "postgresql"
    writer_apart = False

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        #: the DSN without its password
        self.location = location(dsn)
        self.spec = self.location
        #: the database's size as the writer last read it (None until it has)
        self._size: int | None = None

    def prepare(self) -> None:
        """Check that the DSN parses; whether the server answers is the writer's first open."""
        parse(self.dsn)

    def check_source(self) -> None:
        """Nothing to check before connecting: a database feedd never made reads as empty."""
        parse(self.dsn)

    def same_store(self, other: Backend) -> bool:
        return isinstance(other, PostgresBackend) and other.dsn == self.dsn

    def open_writer(self, *, busy_timeout_ms: int) -> PgWriteConnection:
        """Connect and migrate (blocking: the writer's thread). Waiting on another writer's
        locks is the server's business, so ``busy_timeout_ms`` does not apply."""
        from feedd.store.postgres.writer import PgWriteConnection

        return PgWriteConnection.open(self.dsn, on_size=self._set_size)

    def open_reader(self) -> ReadStore:
        from feedd.store.postgres.reader import PgReader

        reader = PgReader(self.dsn)
        reader.warm()  # the first request must not wait for a connect
        return reader

    def size_bytes(self) -> int | None:
        """A cached figure (refreshed by the writer), never a query on the caller's thread."""
        return self._size

    def disk_folder(self) -> Path | None:
        return None

    def _set_size(self, size: int) -> None:
        self._size = size
