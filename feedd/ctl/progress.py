"""Progress of long work on a terminal: a bar redrawn in place on a tty, plain lines now and
then when stderr is a pipe or a file (a log must not fill with carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 28
#: how often a piped progress line is written, and how often the bar is redrawn
LINE_EVERY_S = 5.0
REDRAW_EVERY_S = 0.1


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``update(done, share)``: ``done`` units so far and, when known, the share (0-1) of the
    whole; the rate and the time left follow from them."""

    def __init__(self, unit: str, stream: TextIO | None = None) -> None:
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._shown_at = 0.0
        self._drawn = False

    def update(self, done: float, share: float | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        every = REDRAW_EVERY_S if self.tty else LINE_EVERY_S
        if not force and now - self._shown_at < every:
            return
        self._shown_at = now
        text = self.describe(done, share, now)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def describe(self, done: float, share: float | None, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{_count(done)} {self.unit}", f"{_count(rate)} {self.unit}/s"]
        if share is not None:
            share = min(max(share, 0.0), 1.0)
            filled = round(share * BAR_WIDTH)
            bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + f"] {share * 100:5.1f}%"
            parts.insert(0, bar)
            if 0 < share < 1:
                parts.append(f"ETA {_duration(elapsed * (1 - share) / share)}")
        return "  ".join(parts)

    def finish(self) -> None:
        """End the bar's line, so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
