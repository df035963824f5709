"""The embedded SQLite backend: one file, its writer connection and pooled read connections."""

from __future__ import annotations

import os
from pathlib import Path

from feedd.errors import StoreError
from feedd.store.database import Database
from feedd.store.reader import Reader, database_bytes


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def prepare(self) -> None:
        """Create the database's folder, or say in one line why it cannot be used.

        SQLite alone reports most of these as "unable to open database file", naming no cause.
        """
        database = self.path
        if database.is_dir():
            raise StoreError(f"database path {database} is a folder, not a database file")
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"database folder {folder} is a file, not a folder") from None
        except OSError as exc:
            raise StoreError(
                f"cannot create the database folder {folder}: {_reason(exc)}"
            ) from None
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot use the database folder {folder}: {_reason(exc)}") from None
        if read_only:
            raise StoreError(f"database folder {folder} is on a read-only file system")
        if not database.exists() and not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create {database.name} in {folder}: permission denied")

    def open_writer(self, *, busy_timeout_ms: int) -> Database:
        return Database.open(self.path, busy_timeout_ms=busy_timeout_ms)

    def open_reader(self) -> Reader:
        return Reader(self.path)

    def size_bytes(self) -> int | None:
        return database_bytes(self.path)

    def disk_folder(self) -> Path | None:
        return self.path.parent


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
