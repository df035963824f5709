"""Log output on stderr: ``LEVEL logger: message`` lines for people and journald, or JSON lines.

Only the handler installed here is ever replaced, so handlers the service adds to the root
logger later (the ``/logs`` ring buffer) survive a reconfiguration.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import TextIO

FORMATS = ("text", "json")

# syslog priorities, which journald reads from a "<N>" prefix on each line of a stream
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _iso_utc(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _priority(levelno: int) -> int:
    return next((p for level, p in _PRIORITY.items() if levelno >= level), 7)


class TextFormatter(logging.Formatter):
    """``[time] LEVEL logger: message``, the traceback on the following lines."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journald:
            # journald stamps each entry itself; the prefix gives every line (traceback too)
            # its priority, so `journalctl -p err` shows whole tracebacks.
            prefix = f"<{_priority(record.levelno)}>"
            return "\n".join(prefix + line for line in text.split("\n"))
        return f"{_iso_utc(record.created)} {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines inside strings, so the entry stays on one line.
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler configure_logging owns; its type is how a second call finds it."""


def under_journald(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to journald.

    systemd sets ``$JOURNAL_STREAM`` to ``device:inode`` of the stream it connected; comparing
    them keeps a child whose stderr was redirected elsewhere from dropping its timestamps.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        # No descriptor (a StringIO) or a malformed variable: not the journal.
        return False


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log records at ``level`` and above to ``stream`` (stderr) in format ``text`` or ``json``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (known: {', '.join(FORMATS)})")
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
            handler.close()
    handler = _Handler(stream)
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else TextFormatter(journald=under_journald(stream))
    )
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
