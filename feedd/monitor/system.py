"""Once a second: system figures (psutil) and per-exchange rates, for /status and /metrics.

Sampling on a timer keeps requests cheap: /status and every /ws status subscriber read the
latest sample instead of asking the kernel again. psutil opens files under /proc to read them:
when descriptors run out (EMFILE) a sample keeps the last figures and says so once, since the
monitor dying would take feedd down with it.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import psutil
import trio

from feedd.engine.stats import ExchangeStats
from feedd.monitor.taskcpu import TaskCpu
from feedd.store.backend import Backend

log = logging.getLogger("feedd.monitor")

SAMPLE_S = 1.0


@attrs.frozen
class ExchangeRates:
    messages_per_s: float = 0.0
    candles_per_s: float = 0.0
    #: percent of one core spent in this exchange's tasks on the event loop
    cpu_percent: float = 0.0


def count_tasks() -> int:
    """Every live trio task of this run: a leak shows up as a count that keeps growing."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return 0
    pending, total = [root], 0
    while pending:
        task = pending.pop()
        total += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return total


class Monitor:
    def __init__(
        self,
        store: Backend,
        exchange_stats: Callable[[], Mapping[str, ExchangeStats]],
        cpu: TaskCpu,
        started_at: float,
    ) -> None:
        self.store = store
        self._exchange_stats = exchange_stats
        self._cpu = cpu
        self._process = psutil.Process()
        self.started_at = started_at
        self.platform = (
            f"{platform.system()} {platform.release()} {platform.machine()} / "
            f"Python {platform.python_version()}"
        )
        self.system: dict[str, Any] = {}
        self.rates: dict[str, ExchangeRates] = {}
        #: last counters per exchange object: (messages, candles, cpu seconds)
        self._previous: dict[int, tuple[float, int, int, float]] = {}
        #: samples of the system figures that failed (out of descriptors, say)
        self.sample_errors = 0
        self._failing = False
        self.sample()

    @property
    def busy_seconds(self) -> Mapping[str, float]:
        """Event-loop seconds spent in task steps, by group (an exchange's name or other)."""
        return self._cpu.busy

    def sample(self) -> None:
        now = time.monotonic()
        try:
            self.system = self._system()
        except (OSError, psutil.Error) as exc:
            self.sample_errors += 1
            if not self._failing:
                self._failing = True
                log.warning("cannot read system figures (%s); keeping the last ones", exc)
        else:
            if self._failing:
                self._failing = False
                log.info(
                    "system figures readable again after %d failed samples", self.sample_errors
                )
        self.rates = self._rates(now)

    def _system(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        with self._process.oneshot():
            info = self._process.memory_info()
            process_cpu = self._process.cpu_percent(None)
            threads = self._process.num_threads()
            fds = self._process.num_fds() if hasattr(self._process, "num_fds") else None
        folder = self.store.disk_folder()
        try:
            disk = psutil.disk_usage(os.fspath(folder)) if folder is not None else None
        except OSError:
            disk = None
        disk_free, disk_total = (disk.free, disk.total) if disk is not None else (None, None)
        return {
            "cpu_percent": psutil.cpu_percent(None),
            "cpu_count": psutil.cpu_count() or 1,
            "memory_total": memory.total,
            "memory_used": memory.total - memory.available,
            "memory_percent": memory.percent,
            "process_rss": info.rss,
            # The data segment: the interpreter's heap plus thread stacks, on Linux.
            "process_heap": getattr(info, "data", info.rss),
            "process_cpu_percent": process_cpu,
            "threads": threads,
            "open_fds": fds,
            "tasks": count_tasks(),
            "db_size": self.store.size_bytes(),
            "disk_free": disk_free,
            "disk_total": disk_total,
            "uptime_s": round(time.time() - self.started_at, 1),
            "platform": self.platform,
        }

    def _rates(self, now: float) -> dict[str, ExchangeRates]:
        rates: dict[str, ExchangeRates] = {}
        for name, stats in self._exchange_stats().items():
            busy = self._cpu.busy.get(name, 0.0)
            before = self._previous.get(id(stats))
            self._previous[id(stats)] = (now, stats.messages, stats.candles, busy)
            if before is None or now <= before[0]:
                rates[name] = ExchangeRates()
                continue
            elapsed = now - before[0]
            rates[name] = ExchangeRates(
                round((stats.messages - before[1]) / elapsed, 1),
                round((stats.candles - before[2]) / elapsed, 1),
                # The instrument charges by group name, so a restarted exchange's new stats
                # object continues the same counter: clamp the first delta at zero.
                round(max(0.0, busy - before[3]) / elapsed * 100, 1),
            )
        return rates

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(SAMPLE_S)
            self.sample()
