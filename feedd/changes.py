"""The change queue: configuration changes carried out one at a time by a task of the service.

A caller hands a change over and waits for its answer; cancelling the caller (an HTTP client
that disconnects cancels its request) never cuts a change short, so a change is never left
half-applied (saved to the file but an exchange stopped and never started again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import trio

from feedd.errors import FeeddError

T = TypeVar("T")

log = logging.getLogger("feedd.control")

#: changes handed over and not yet started; beyond this a caller waits for room (the web
#: server's request limits keep far fewer changes in progress)
QUEUE_SIZE = 64
NOT_MADE = "feedd is shutting down: the change was not made"
INTERRUPTED = (
    "feedd is shutting down: the change was interrupted; the config file holds what runs at"
    " the next start"
)


class _Job(Generic[T]):
    """One change and, once carried out, its answer (a value or the error it raised)."""

    def __init__(self, change: Callable[[], Awaitable[T]]) -> None:
        self.change = change
        self.done = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def succeed(self, value: T) -> None:
        self._value = value
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self.done.set()

    def answer(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


async def _cancel_on(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


class ChangeQueue:
    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._send, self._recv = trio.open_memory_channel[_Job[Any]](size)
        self._in_progress = 0

    @property
    def pending(self) -> int:
        """Changes handed over and not answered yet (queued or in progress)."""
        return self._send.statistics().current_buffer_used + self._in_progress

    async def run(
        self,
        stop: trio.Event | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Carry out changes in the order they were handed over, until ``stop`` is set (or
        this task is cancelled). Shutdown is not held up: the change in progress is
        interrupted and every change still queued is answered that it was not made."""
        try:
            async with trio.open_nursery() as nursery:
                if stop is not None:
                    nursery.start_soon(_cancel_on, stop, nursery.cancel_scope)
                task_status.started()
                async for job in self._recv:
                    await self._carry_out(job)
        finally:
            self._send.close()
            while True:
                try:
                    self._recv.receive_nowait().fail(FeeddError(NOT_MADE))
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    async def submit(self, change: Callable[[], Awaitable[T]]) -> T:
        """Hand ``change`` over and wait for its answer: its value, or the error it raised.

        Cancelled before the hand-over (waiting for room), nothing changes; cancelled after
        it, the change is carried out all the same."""
        job = _Job(change)
        try:
            await self._send.send(job)
        except trio.ClosedResourceError:
            raise FeeddError(NOT_MADE) from None
        await job.done.wait()
        return job.answer()

    async def _carry_out(self, job: _Job[Any]) -> None:
        self._in_progress += 1
        try:
            job.succeed(await job.change())
        except Exception as exc:
            # The error belongs to the caller (ConfigError, StoreError, ...): the queue goes on.
            job.fail(exc)
        finally:
            self._in_progress -= 1
            if not job.done.is_set():
                # Cancelled: the service is stopping.
                log.warning("shutting down during a configuration change; it was interrupted")
                job.fail(FeeddError(INTERRUPTED))
