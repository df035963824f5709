"""The writer's connection across faults: reopened after a failure, recreated (a new
generation) when its store was deleted or replaced, every call run in one worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import ParamSpec, TypeVar

import trio

from feedd.errors import StoreError, StoreUnavailable
from feedd.store.backend import Backend, WriteConnection

log = logging.getLogger("feedd.store")

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseHandle:
    """Owns the writer's connection between failures; ``get`` hands out a usable one."""

    def __init__(self, backend: Backend, *, busy_timeout_ms: int) -> None:
        self.backend = backend
        self._busy_timeout_ms = busy_timeout_ms
        self._db: WriteConnection | None = None
        # trio's worker threads are pooled; a limiter of one keeps the connection single-user.
        # A dedicated thread hops ~20 µs faster, irrelevant at a few commits per second.
        self._thread = trio.CapacityLimiter(1)
        self._serving = False
        #: the store last opened: a different one (or a new one) at the next open is a recreation
        self._identity: Hashable | None = None
        #: times the store was found deleted or replaced and made anew
        self.generation = 0
        self._recreated = trio.Event()
        self._rejected_before = 0

    @property
    def rejected(self) -> int:
        """Candles the codec refused, over every connection."""
        return self._rejected_before + (self._db.rejected if self._db is not None else 0)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def upkeep_due(self) -> bool:
        """The open connection has work for between two commits (asks nothing of the store)."""
        return self._db is not None and self._db.upkeep_due

    async def start(self) -> str | None:
        """Open at start: StoreError if the store cannot be opened at all (a configuration
        problem the operator must see at once); the reason if it opened read-only or its
        server cannot be reached now (then the writer starts unhealthy and reopens until it
        can write), else None."""
        self._serving = True
        try:
            await self.get()
        except StoreUnavailable as exc:
            return str(exc)
        except StoreError as exc:
            if self._identity is None:
                self._serving = False
                raise
            return str(exc)
        return None

    async def get(self) -> WriteConnection:
        """The connection to write with, (re)opened as needed; StoreError if the file cannot
        be opened for writing now."""
        if not self._serving:
            raise StoreError("the store writer is not running")
        db = self._db
        if db is not None and db.moved():
            log.error(
                "database %s was deleted or replaced while open: reopening it",
                self.backend.location,
            )
            await self.discard()
            db = None
        if db is None:
            db = await self.run(self.backend.open_writer, busy_timeout_ms=self._busy_timeout_ms)
            self._adopt(db)
            if not db.writable:
                reason = db.read_only_reason
                await self.run(db.close, checkpoint=False)
                raise StoreError(f"cannot write to {self.backend.location}: {reason}")
            self._db = db
        return db

    def _adopt(self, db: WriteConnection) -> None:
        known = self._identity
        self._identity = db.identity
        if known is not None and (db.created or db.identity != known):
            self.generation += 1
            recreated, self._recreated = self._recreated, trio.Event()
            recreated.set()
            log.error(
                "database %s was made anew (generation %d): what the old one held is gone",
                self.backend.location,
                self.generation,
            )

    async def wait_recreated(self, seen: int) -> int:
        """Return the generation once it is past ``seen``."""
        while self.generation <= seen:
            await self._recreated.wait()
        return self.generation

    async def discard(self) -> None:
        """Close after a failure, without the checkpoint (it would only fail or wait again);
        the next ``get`` opens afresh, which is what clears a connection SQLite opened
        read-only or left in a failed state."""
        db, self._db = self._db, None
        if db is not None:
            self._rejected_before += db.rejected
            with trio.CancelScope(shield=True):
                await self.run(db.close, checkpoint=False)

    async def close(self) -> None:
        """Checkpoint and close; later calls to ``get`` fail."""
        self._serving = False
        db, self._db = self._db, None
        if db is not None:
            self._rejected_before += db.rejected
            with trio.CancelScope(shield=True):
                await self.run(db.close)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the writer's thread."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._thread)
