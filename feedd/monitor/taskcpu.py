"""CPU share of the event loop per exchange, measured by a trio instrument.

Each task step is timed and charged to the group of the nearest ancestor task registered
with :meth:`TaskCpu.register` (the supervisor registers each exchange's runner), so the
figure covers every shard, backfill and discovery task of that exchange.
"""

from __future__ import annotations

import time
from collections import defaultdict

import trio
from trio.lowlevel import Task

OTHER = "other"


class TaskCpu(trio.abc.Instrument):
    def __init__(self) -> None:
        self._roots: dict[Task, str] = {}
        self._group_of: dict[Task, str] = {}
        self._started = 0.0
        #: group -> seconds of event-loop time spent in its task steps
        self.busy: defaultdict[str, float] = defaultdict(float)

    def register(self, task: Task, group: str) -> None:
        self._roots[task] = group
        self._group_of.clear()  # cached lookups may predate this root

    def unregister(self, task: Task) -> None:
        self._roots.pop(task, None)
        self._group_of.clear()

    def before_task_step(self, task: Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: Task) -> None:
        elapsed = time.perf_counter() - self._started
        group = self._group_of.get(task)
        if group is None:
            group = self._group_of[task] = self._find_group(task)
        self.busy[group] += elapsed

    def task_exited(self, task: Task) -> None:
        self._group_of.pop(task, None)

    def _find_group(self, task: Task) -> str:
        current: Task | None = task
        while current is not None:
            group = self._roots.get(current)
            if group is not None:
                return group
            nursery = current.parent_nursery
            current = None if nursery is None else nursery.parent_task
        return OTHER
