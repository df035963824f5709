"""The embedded SQLite backend: one file, its writer connection and pooled read connections."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from feedd.errors import StoreError
from feedd.store.database import Database

if TYPE_CHECKING:
    from feedd.store.backend import Backend
    from feedd.store.reader import Reader


class SqliteBackend:
    kind = "sqlite"
    writer_apart = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self.spec = f"sqlite:{path}"

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

    def check_source(self) -> None:
        """A file, SQLite, with feedd's tables: anything else is refused before a writer
        would add feedd's tables to it."""
        path = self.path
        if not path.is_file():
            raise StoreError(f"no SQLite store at {path}")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{path} is not a readable SQLite database ({exc})") from None
        if not {"series", "candles"} <= names:
            raise StoreError(f"{path} is not a feedd store (no candles table)")

    def same_store(self, other: Backend) -> bool:
        if not isinstance(other, SqliteBackend):
            return False
        try:
            return self.path.samefile(other.path)
        except OSError:
            return self.path.resolve() == other.path.resolve()

    def open_writer(self, *, busy_timeout_ms: int) -> Database:
        return Database.open(self.path, busy_timeout_ms=busy_timeout_ms)

    # The readers' module (trio, the export pool) is imported only where they are used: a
    # writer process (feedd.store.writeprocess) unpickles this backend and needs none of it.
    def open_reader(self) -> Reader:
        from feedd.store.reader import Reader

        return Reader(self.path)

    def size_bytes(self) -> int | None:
        from feedd.store.reader import database_bytes

        return database_bytes(self.path)

    def disk_folder(self) -> Path | None:
        return self.path.parent


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
