"""The store interface: what the writer, the readers, jobs and the service ask of a backend.

SQLite (``feedd.store.sqlite``) and PostgreSQL (``feedd.store.postgres``) implement it; which
one runs is chosen by ``open_backend`` from the config and known nowhere outside this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from feedd.candle import Candle
    from feedd.storageconfig import StorageConfig
    from feedd.store.coverage import SeriesCoverage
    from feedd.store.exportrequest import ExportRequest
    from feedd.store.lease import Lease
    from feedd.store.nodes import NodeRecord
    from feedd.store.reader import CandleRow, JsonPage, SeriesInfo


class WriteConnection(Protocol):
    """The writer's connection. Used from one thread at a time (the writer's); every
    method is one transaction and raises ``StoreError`` on failure."""

    @property
    def identity(self) -> Hashable | None:
        """What this connection has open; a different value at the next open means the
        store was made anew (deleted, replaced) and lost its history."""
        ...

    @property
    def created(self) -> bool:
        """This open created the store (it did not exist)."""
        ...

    @property
    def writable(self) -> bool:
        """False when the store could be opened only for reading."""
        ...

    @property
    def rejected(self) -> int:
        """Candles refused as unstorable (logged, never retried)."""
        ...

    @property
    def read_only_reason(self) -> str:
        """Why the store may be read-only, for the operator (when ``writable`` is False)."""
        ...

    def moved(self) -> bool:
        """Whether the store this connection writes is no longer the configured one."""
        ...

    def write(self, candles: Sequence[Candle]) -> int:
        """Upsert ``candles``: a closed candle is never overwritten by a forming one."""
        ...

    @property
    def upkeep_due(self) -> bool:
        """Work that writes leave for later waits (``upkeep``); no call to the store."""
        ...

    def upkeep(self) -> None:
        """Do that work in a transaction of its own, which the writer runs between two
        commits so that no commit waits for it (SQLite: moving a full journal of live rows
        into the table); a write that finds it due does it anyway."""
        ...

    def write_job(self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str) -> int:
        """Upsert ``candles`` and save the job's document in the same transaction."""
        ...

    def delete_job(self, job_id: str) -> None: ...

    def record_node(self, node_id: str, doc: str, at_ms: int) -> int:
        """Save node ``node_id``'s heartbeat (its status ``doc``, JSON) stamped with the
        store's clock, and delete the rows of nodes silent for a day; returns the stamp.
        ``at_ms`` is the node's clock, the stamp where the store has no clock of its own
        (SQLite: one machine); a server stamps with its own, whatever the nodes' say."""
        ...

    def load_jobs(self) -> list[str]:
        """Every saved job document, oldest first."""
        ...

    def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> Lease:
        """Take job ``job_id``'s lease for ``node_id``, or renew it, for ``ttl_ms`` on the
        store's clock, unless another node holds one not expired yet (a store only one node
        uses grants it always); returns the lease as it stands after (feedd/store/lease.py)."""
        ...

    def release_job(self, job_id: str, node_id: str) -> None:
        """Give job ``job_id``'s lease up, if ``node_id`` still holds it."""
        ...

    def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Runs of stored closed candles overlapping [start, end], clipped to it, ascending."""
        ...

    def prune(self, max_records: int) -> int:
        """Keep the newest ``max_records`` candles of every series written since the last
        prune (0: keep everything), as feedd/store/retention.py decides which series to trim
        this round (up to 1 % more may stay); returns rows deleted."""
        ...

    def wipe(self) -> None:
        """Delete every candle, series, coverage run and saved job (node heartbeats stay)."""
        ...

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the candle tables, after a bulk load
        (``feedd migrate``): without them PostgreSQL plans range reads as if the tables were
        empty (a sequential scan and a sort per page)."""
        ...

    def close(self, *, checkpoint: bool = True) -> None:
        """Close; ``checkpoint`` False after a failure, where tidying would only fail again."""
        ...


class ReadStore(Protocol):
    """Reads for the API, the engine's heals and coverage: safe to share between tasks,
    each query run off the event loop. A store not created yet reads as empty."""

    async def candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> list[CandleRow]: ...

    async def candles_json(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> JsonPage: ...

    async def last_closed_open_time(
        self, exchange: str, symbol: str, interval: str, before: int | None = None
    ) -> int | None: ...

    async def closed_open_times(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[int]: ...

    async def series(self) -> list[SeriesInfo]: ...

    async def resample(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> list[CandleRow]: ...

    async def resample_json(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        since: int | None = None,
        until: int | None = None,
        limit: int = 1000,
    ) -> JsonPage: ...

    async def coverage(
        self, exchange: str | None = None, symbol: str | None = None, interval: str | None = None
    ) -> list[SeriesCoverage]: ...

    async def sources(self, exchange: str, symbol: str, interval: str) -> dict[str, int]: ...

    def export(self, request: ExportRequest) -> AsyncIterator[bytes]: ...

    async def nodes(self) -> list[NodeRecord]:
        """Every node's latest heartbeat, the most recent first."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """One configured store: how to open its writer and its readers."""

    #: "sqlite" or "postgresql"
    kind: str
    #: where the store is, for logs and errors: never a password
    location: str
    #: the store as ``feedd migrate`` names it (``sqlite:PATH`` or a URL): never a password
    spec: str
    #: the writer's work runs in another process (``feedd.store.writeprocess``), not under
    #: this one's GIL: ingest can fill the next batch while one commits
    writer_apart: bool

    def prepare(self) -> None:
        """Check at start what would make the store unusable for good (a folder in the way,
        a malformed address): ``StoreError`` in one line naming the cause."""
        ...

    def check_source(self) -> None:
        """Before reading this store as a copy's source, without creating or changing
        anything: ``StoreError`` in one line when it is not a feedd store that can be read."""
        ...

    def same_store(self, other: Backend) -> bool:
        """Whether ``other`` is this very store (one file, one server's database)."""
        ...

    def open_writer(self, *, busy_timeout_ms: int) -> WriteConnection:
        """Open the writer's connection, creating or migrating the schema (blocking: called
        in the writer's thread)."""
        ...

    def open_reader(self) -> ReadStore: ...

    def size_bytes(self) -> int | None:
        """Bytes the store takes, when the backend can tell cheaply."""
        ...

    def disk_folder(self) -> Path | None:
        """A local folder whose free space matters to the store, if any."""
        ...


def open_backend(storage: StorageConfig, base: Path) -> Backend:
    """The backend ``storage`` names; relative SQLite paths are taken from ``base``; its
    writer in a child process when ``storage.writer`` says so."""
    backend: Backend
    if storage.backend == "postgresql":
        from feedd.store.postgres import postgres_backend  # psycopg only when asked for

        backend = postgres_backend(storage.dsn or "")
    else:
        from feedd.store.sqlite import SqliteBackend

        path = Path(storage.path)
        backend = SqliteBackend(path if path.is_absolute() else base / path)
    if storage.writer == "process":
        from feedd.store.writeprocess import ProcessBackend

        return ProcessBackend(backend)
    return backend
