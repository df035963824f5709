"""Log output on stderr: ``LEVEL logger: message`` lines for people and journald, or JSON lines.

Under journald every record is one line (one journal entry, a traceback included) that starts
with its syslog priority. Only the handler installed here is ever replaced, so handlers the
service adds to the root logger later (the ``/logs`` ring buffer) survive a reconfiguration.
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


def _journal_line(levelno: int, text: str) -> str:
    """One journal entry: journald splits a stream at newlines, so a traceback printed as is
    would be one entry per line, and it reads the priority from a ``<N>`` prefix
    (SyslogLevelPrefix=, on by default) so that ``journalctl -p warning`` filters."""
    folded = text.replace("\r\n", "\n").replace("\r", "\\r").replace("\n", "\\n")
    return f"<{_priority(levelno)}>{folded}"


class TextFormatter(logging.Formatter):
    """``[time] LEVEL logger: message``, the traceback on the following lines; under journald
    no time (journald stamps each entry) and the newlines escaped as ``\\n``."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journald:
            return _journal_line(record.levelno, text)
        return f"{_iso_utc(record.created)} {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and ``exc``;
    under journald behind the record's ``<N>`` priority, which journald strips."""

    def __init__(self, *, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

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
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return _journal_line(record.levelno, line) if self.journald else line


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
    journald = under_journald(stream)
    formatter: logging.Formatter = (
        JsonFormatter(journald=journald) if fmt == "json" else TextFormatter(journald=journald)
    )
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
