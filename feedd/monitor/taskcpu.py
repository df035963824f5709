"""CPU share of the event loop per exchange, estimated by a trio instrument that samples.

One scheduler batch in ``every`` (chosen at random) has its task steps timed; each timed step
is charged ``every`` times over to the group of the nearest ancestor task registered with
:meth:`TaskCpu.register` (the supervisor registers each exchange's runner), so the figure
covers every shard, backfill and discovery task of that exchange, in seconds.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import trio
from trio.lowlevel import Task

OTHER = "other"
#: one batch in this many is timed. Timing every step cost 7 % of the loop at full load (#17);
#: one in 8 keeps the /status share within a few points at a 1 s sampling period.
SAMPLE_EVERY = 8


class _Stepper(trio.abc.Instrument):
    """Times the task steps of one batch: installed after the I/O wait before it, it removes
    itself at the next I/O wait (even when its owner was removed meanwhile)."""

    def __init__(self, owner: TaskCpu) -> None:
        self._owner = owner
        self.installed = False
        #: None until a step began under this instrument: a step already running when the
        #: instrument was installed has no start to measure from
        self._started: float | None = None

    def __dir__(self) -> list[str]:
        # trio's add_instrument looks for hooks with dir(): the default lists every attribute
        # of the class tree, and made installing this once per timed batch cost 45 us (4 us
        # with the hooks alone).
        return ["before_task_step", "after_task_step", "before_io_wait"]

    def before_task_step(self, task: Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: Task) -> None:
        if self._started is None:
            return
        elapsed = time.perf_counter() - self._started
        self._started = None
        self._owner._charge(task, elapsed)

    def before_io_wait(self, timeout: float) -> None:
        self.installed = False
        self._started = None
        trio.lowlevel.remove_instrument(self)


class TaskCpu(trio.abc.Instrument):
    def __init__(self, every: int = SAMPLE_EVERY, rng: random.Random | None = None) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._roots: dict[Task, str] = {}
        self._group_of: dict[Task, str] = {}
        self._every = every
        self._chance = 1.0 / every
        self._random = (rng or random.Random()).random
        self._stepper = _Stepper(self)
        #: group -> estimated seconds of event-loop time spent in its task steps
        self.busy: defaultdict[str, float] = defaultdict(float)

    def register(self, task: Task, group: str) -> None:
        self._roots[task] = group
        self._group_of.clear()  # cached lookups may predate this root

    def unregister(self, task: Task) -> None:
        self._roots.pop(task, None)
        self._group_of.clear()

    def after_io_wait(self, timeout: float) -> None:
        # The batch about to run is timed with probability 1/every; batches are drawn
        # independently of what they hold, so every x the timed steps estimates the total.
        if self._random() < self._chance and not self._stepper.installed:
            self._stepper.installed = True
            trio.lowlevel.add_instrument(self._stepper)

    def task_exited(self, task: Task) -> None:
        self._group_of.pop(task, None)

    def _charge(self, task: Task, elapsed: float) -> None:
        group = self._group_of.get(task)
        if group is None:
            group = self._group_of[task] = self._find_group(task)
        self.busy[group] += elapsed * self._every

    def _find_group(self, task: Task) -> str:
        current: Task | None = task
        while current is not None:
            group = self._roots.get(current)
            if group is not None:
                return group
            nursery = current.parent_nursery
            current = None if nursery is None else nursery.parent_task
        return OTHER
