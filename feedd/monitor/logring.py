"""The recent log lines, kept in memory for ``/logs``, the ``/ws`` logs topic and the dashboard.

A logging handler, so it sees every record whichever thread logs it (the writer thread does);
readers ask for lines after a sequence number and never miss or repeat one.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque

import attrs

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: longest message kept; a log line is for people, not for payload dumps
MAX_MESSAGE = 2000


@attrs.frozen
class LogLine:
    seq: int
    time: int
    level: str
    logger: str
    message: str


class LogRing(logging.Handler):
    def __init__(self, capacity: int = 2000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}: {record.exc_info[1]!r}"
        except Exception:  # a bad format string must not lose the line or raise in the caller
            message = str(record.msg)
        level = record.levelname.lower()
        with self._guard:
            line = LogLine(
                next(self._seq),
                int(record.created * 1000),
                level,
                record.name,
                message[:MAX_MESSAGE],
            )
            self._lines.append(line)

    @property
    def last_seq(self) -> int:
        with self._guard:
            return self._lines[-1].seq if self._lines else 0

    def since(
        self, seq: int = 0, min_level: str = "debug", limit: int | None = None
    ) -> list[LogLine]:
        """Lines after ``seq`` at ``min_level`` or above, oldest first (the newest ``limit``)."""
        floor = LEVELS[min_level]
        with self._guard:
            lines = [
                line
                for line in self._lines
                if line.seq > seq and LEVELS.get(line.level, logging.CRITICAL) >= floor
            ]
        return lines[-limit:] if limit else lines
