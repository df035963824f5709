"""feedd's side of the export worker (``feedd.store.exportworker``): one process, started at
the first export of a stored series and kept, answering every export in progress a chunk per
request; resampled exports are built in threads through sqlite3 (``feedd.store.resample``).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from feedd.errors import StoreError
from feedd.store import exportwire as wire
from feedd.store.exportrequest import ExportRequest
from feedd.store.schema import connect_reader, store_error

if TYPE_CHECKING:
    from feedd.store.export import Export

log = logging.getLogger(__name__)
#: a worker with no export for this long exits, giving its memory back (~95-125 MB: pyarrow,
#: ADBC and Arrow's pool); the next export starts another (~0.5 s of CPU)
IDLE_EXIT_S = 300.0
WORKER_COMMAND = (sys.executable, "-m", "feedd.store.exportworker")
#: ``FEEDD_EXPORT_WORKER=0``: stored series too are exported in threads through sqlite3 (~3x
#: slower; for a platform where the worker cannot run, and for comparing in benchmarks)
WORKER_SWITCH = "FEEDD_EXPORT_WORKER"
_F_SETPIPE_SZ = 1031  # Linux: fcntl.F_SETPIPE_SZ from Python 3.10, spelled out for mypy
#: the worker's stdout pipe holds a chunk or so (the default 64 KiB made ~30 reads of one)
_PIPE_BYTES = 1 << 20
#: how long a cancelled export's close may take to reach the worker before it is killed
_CLOSE_TIMEOUT_S = 2.0
#: how long to wait for a killed worker to be reaped (SIGKILL cannot be refused)
_REAP_TIMEOUT_S = 5.0


class ExportPool:
    """The exports of one SQLite file: safe to share between tasks; ``close`` stops the worker."""

    def __init__(self, path: Path, limiter: trio.CapacityLimiter) -> None:
        self.path = path
        self._limiter = limiter
        self._worker: _Worker | None = None
        self._starting = trio.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def export(self, request: ExportRequest) -> AsyncIterator[bytes]:
        """``request``'s file a chunk at a time."""
        if request.resampled or os.environ.get(WORKER_SWITCH, "1") == "0":
            return self._in_threads(request)
        return self._from_worker(request)

    def close(self) -> None:
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    async def _from_worker(self, request: ExportRequest) -> AsyncIterator[bytes]:
        worker: _Worker | None = None
        ident = 0
        finished = False
        try:
            for attempt in (1, 2):
                worker = await self._running_worker()
                ident = next(self._ids)
                worker.expect(ident)
                served = worker.served
                try:
                    await worker.order(wire.Order(wire.OPEN, ident, str(self.path), request))
                    kind, payload = await worker.answer(ident)
                    break
                except StoreError:
                    worker.forget(ident)
                    # A worker that had served exports may have stopped itself (idle) just as
                    # this one was asked of it: once, another worker is asked.
                    if worker.failure is None or not served or attempt == 2:
                        raise
                    log.info("export worker had stopped: asking another")
            assert worker is not None
            while True:
                if kind != wire.DATA:
                    finished = True
                    if kind == wire.FAIL:
                        raise StoreError(payload.decode(errors="replace"))
                    return
                # Asked before this chunk is handed on: the worker reads and encodes the next
                # while the client receives this one.
                await worker.order(wire.Order(wire.NEXT, ident))
                if payload:
                    yield payload
                kind, payload = await worker.answer(ident)
        finally:
            if worker is not None:
                worker.forget(ident)
                if not finished and worker.failure is None:
                    await self._abandon(worker, ident)

    async def _abandon(self, worker: _Worker, ident: int) -> None:
        """Tell the worker to drop a cancelled export; a worker that cannot be told is killed
        (it is started anew for the next export)."""
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CLOSE_TIMEOUT_S
            with contextlib.suppress(StoreError):
                await worker.order(wire.Order(wire.CLOSE, ident))
        if scope.cancelled_caught or worker.failure is not None:
            log.warning("export worker did not take a close: stopping it")
            await worker.stop()

    async def _running_worker(self) -> _Worker:
        async with self._starting:
            if self._closed:
                raise StoreError("reader is closed")
            worker = self._worker
            if worker is not None and (
                worker.failure is not None or worker.process.poll() is not None
            ):
                await worker.stop()  # died since its last export, or during it
                self._worker = None
            if self._worker is None:
                self._worker = await _Worker.start()
            return self._worker

    async def _in_threads(self, request: ExportRequest) -> AsyncIterator[bytes]:
        # pyarrow is loaded at the first such export, not at start (~60 MB of feedd's memory)
        from feedd.store.exportchunks import sqlite3_export

        def start() -> Export:
            try:
                if not self.path.exists():
                    empty = sqlite3.connect(":memory:", check_same_thread=False)
                    return sqlite3_export(empty, request)
                return sqlite3_export(connect_reader(self.path), request)
            except sqlite3.Error as exc:
                raise store_error(exc, "cannot read", self.path) from exc

        def step(job: Export) -> bytes | None:
            try:
                return job.next_chunk()
            except sqlite3.Error as exc:
                raise store_error(exc, "cannot read", self.path) from exc

        job = await trio.to_thread.run_sync(start, limiter=self._limiter)
        try:
            while (
                chunk := await trio.to_thread.run_sync(step, job, limiter=self._limiter)
            ) is not None:
                if chunk:
                    yield chunk
        finally:
            job.close()


class _Worker:
    """One worker process and the answers owed to the exports it serves. Requests may come
    from any task; whichever task waits for an answer reads the next frame, whoever's it is."""

    def __init__(self, process: subprocess.Popen[bytes], stdin: int, stdout: int) -> None:
        self.process = process
        self._stdin = trio.lowlevel.FdStream(stdin)
        self._stdout = trio.lowlevel.FdStream(stdout)
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self._receive_lock = trio.Lock()
        #: the answer each export in progress is owed (None until it comes); an id missing
        #: here is a cancelled export's, whose late answer is dropped
        self._answers: dict[int, tuple[bytes, bytes] | None] = {}
        #: why the worker can no longer be used (None while it can)
        self.failure: str | None = None
        #: exports asked of it
        self.served = 0

    @classmethod
    async def start(cls) -> _Worker:
        # A Popen of our own rather than trio's process: the reader's close is synchronous
        # and may come after trio.run has returned, where trio's process cannot be reaped.
        to_child, stdin = os.pipe()
        stdout, from_child = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a bigger buffer only: the default works too
                fcntl.fcntl(stdout, _F_SETPIPE_SZ, _PIPE_BYTES)

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [*WORKER_COMMAND, "--idle-exit", str(IDLE_EXIT_S)],
                    stdin=to_child,
                    stdout=from_child,
                    start_new_session=True,  # a terminal's Ctrl-C is for feedd, which stops it
                )

            process = await trio.to_thread.run_sync(spawn)
        except BaseException as exc:
            for fd in (stdin, stdout):
                os.close(fd)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot start the export worker: {exc}") from exc
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        log.info("export worker started (pid %d)", process.pid)
        return cls(process, stdin, stdout)

    def expect(self, ident: int) -> None:
        self._answers[ident] = None

    def forget(self, ident: int) -> None:
        self._answers.pop(ident, None)

    async def order(self, order: wire.Order) -> None:
        if self.failure is not None:
            raise StoreError(self.failure)
        if order.op == wire.OPEN:
            self.served += 1
        try:
            async with self._send_lock:
                await self._stdin.send_all(wire.encode_order(order))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._failed("export worker stopped taking requests")
            raise StoreError(self.failure) from None

    async def answer(self, ident: int) -> tuple[bytes, bytes]:
        """The next answer to export ``ident``: (kind, payload)."""
        while (found := self._answers[ident]) is None:
            async with self._receive_lock:
                if self._answers[ident] is not None:
                    break  # read for us by the task that held the lock
                if self.failure is not None:
                    raise StoreError(self.failure)
                owner, kind, payload = await self._frame()
                if owner in self._answers:
                    self._answers[owner] = (kind, payload)
        found = self._answers[ident]
        assert found is not None
        self._answers[ident] = None
        return found

    async def _frame(self) -> tuple[int, bytes, bytes]:
        size_of_header = wire.HEADER.size
        while len(self._buffer) < size_of_header:
            await self._fill(1 << 16)
        owner, kind, size = wire.HEADER.unpack_from(self._buffer)
        end = size_of_header + size
        while len(self._buffer) < end:
            await self._fill(end - len(self._buffer))
        with memoryview(self._buffer) as view:
            payload = bytes(view[size_of_header:end])
        del self._buffer[:end]
        return owner, kind, payload

    async def _fill(self, most: int) -> None:
        try:
            data = await self._stdout.receive_some(most)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            data = b""
            reason = f"export worker's output is gone ({exc})"
        else:
            reason = "export worker stopped"
        if not data:
            await self._failed(reason)
            raise StoreError(self.failure)
        self._buffer += data

    async def _failed(self, reason: str) -> None:
        """Mark the worker unusable, saying how it ended if it did within a moment."""
        if self.failure is not None:
            return
        self.failure = reason
        with trio.move_on_after(1):
            code = await trio.to_thread.run_sync(self.process.wait, abandon_on_cancel=True)
            self.failure = f"{reason} ({_exit_status(code)})"
        log.error("%s: exports in progress fail", self.failure)

    async def stop(self) -> None:
        """Kill the process and reap it, shielded: a cancelled caller leaves nothing behind."""
        self.failure = self.failure or "export worker stopped"
        self.process.kill()
        with trio.CancelScope(shield=True), contextlib.suppress(subprocess.TimeoutExpired):
            await trio.to_thread.run_sync(self.process.wait, _REAP_TIMEOUT_S)
        self._stdin.close()
        self._stdout.close()

    def kill(self) -> None:
        """``stop`` for synchronous callers (the reader's ``close``), inside trio.run or not."""
        self.failure = self.failure or "export worker stopped"
        self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(_REAP_TIMEOUT_S)
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return  # outside trio: the pipes close as this worker is dropped (FdStream.__del__)
        self._stdin.close()
        self._stdout.close()


def _exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
