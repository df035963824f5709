"""What the chaos scenarios share: feedd as a real subprocess, configs for every venue, the
truth comparison over several venues, and a scan of feedd's log for crashes.

A feedd in another process can only be watched from outside, so the helpers for it poll
(its log file, its HTTP API, the database) at a short interval under a deadline; tests
that run feedd in-process wait on its commits instead (``tests/e2e.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio
from e2e import compare, venue_urls

from feedd.intervals import MINUTE_MS, floor_open
from feedd.sim.app import Simulator

VENUES = ("binance_futures", "bybit_futures", "okx_futures")
POLL_S = 0.05
LOG_ARGS = ("--log-level", "info")
#: SIGTERM to exit: feedd's own shutdown deadline is 10 s
STOP_S = 15.0
#: a log record of feedd's own that means it went wrong (not the exchange, not the disk)
CRASH_PATTERNS = re.compile(r"Traceback|ingest crashed|CRITICAL")
#: one failed request or /ws handler: logged with its traceback, the process goes on
HANDLER_ERROR = "unhandled error in a request"
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\dT", re.MULTILINE)

Plan = Mapping[str, Sequence[str]]


def config_doc(sim: Simulator, plan: Plan, **extra: Any) -> dict[str, Any]:
    """A config.json document for feedd against ``sim``: ``plan`` maps venue -> symbols."""
    doc: dict[str, Any] = {
        "exchanges": {
            name: {
                "symbols": list(symbols),
                **venue_urls(sim, name),
                # At 60x a real second is a sim minute: a stall is noticed within 3 s.
                "silence_timeout": 3,
            }
            for name, symbols in plan.items()
        },
        "intervals": ["1m"],
        "database_path": "ohlcv.db",
        "bootstrap_load": 20,
        "batch_interval": 50,
        "port": 0,
    }
    doc.update(extra)
    return doc


def problems(sim: Simulator, db: Path, plan: Plan, start: int, end: int) -> list[str]:
    """Differences from the truth of every venue's closed candles in [start, end]."""
    out: list[str] = []
    for name, symbols in plan.items():
        out += compare(sim, db, name, symbols, start, end)
    return out


def last_closed_minute(sim: Simulator, lag_minutes: int = 1) -> int:
    """The open time of the candle that closed ``lag_minutes`` minutes ago by sim time."""
    return floor_open("1m", sim.now_ms()) - lag_minutes * MINUTE_MS


async def poll_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float, what: str
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    with trio.move_on_after(within) as scope:
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(POLL_S)
    if scope.cancelled_caught:
        raise AssertionError(f"timed out after {within:g} s waiting for {what}")


def _records(log: str) -> list[str]:
    """Log records (a line with a timestamp and what follows it, tracebacks included)."""
    starts = [m.start() for m in _RECORD_START.finditer(log)]
    head = [log[: starts[0]]] if starts and starts[0] > 0 else ([log] if not starts else [])
    return head + [log[a:b] for a, b in zip(starts, [*starts[1:], len(log)], strict=True)]


def crash_lines(log: str) -> list[str]:
    """First lines of the records that say feedd crashed: an ingest crash, a critical error,
    a traceback outside a request handler (one on exit has no timestamp of its own)."""
    return [
        record.splitlines()[0]
        for record in _records(log)
        if CRASH_PATTERNS.search(record) and HANDLER_ERROR not in record.splitlines()[0]
    ]


def handler_errors(log: str) -> list[str]:
    """Records of requests or /ws handlers that failed with an exception."""
    return [record for record in _records(log) if HANDLER_ERROR in record.splitlines()[0]]


class FeeddProcess:
    """``python -m feedd`` on a config file, its log in a file next to it."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.env = env
        #: run in the child before feedd starts (to lower its resource limits, say)
        self.preexec_fn = preexec_fn
        self.process: trio.Process | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, wait_url: bool = True) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as sink:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "feedd", "--config", str(self.config), *LOG_ARGS],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env=None if self.env is None else dict(self.env),
                preexec_fn=self.preexec_fn,
            )
        if wait_url:
            await poll_until(lambda: self._find_url(offset), 30, "feedd to serve")

    def _find_url(self, offset: int) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"feedd exited by itself ({self.process.returncode})")
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        match = re.search(r"feedd serving on (\S+?);", text)
        if match:
            self.url = match.group(1)
        return match is not None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> int:
        assert self.process is not None
        self.process.kill()
        return await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait: the orderly shutdown commits everything received."""
        assert self.process is not None
        self.process.terminate()
        with trio.fail_after(STOP_S):
            return await self.process.wait()

    async def aclose(self) -> None:
        if self.alive:
            await self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_config(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line from a child's pipe: a single read may return only part of it."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data
