"""The ``feedd`` command as systemd runs it (notify socket, watchdog, SIGTERM); its log formats."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from feedd.cli import build_parser
from feedd.exchanges import REGISTRY
from feedd.logsetup import configure_logging

# ----------------------------------------------------------------------------- under systemd


@pytest.fixture
def notify_path() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="sdn")  # AF_UNIX paths stop at 108 bytes
    yield os.path.join(folder, "notify")
    shutil.rmtree(folder)


async def test_ready_watchdog_and_stopping(tmp_path: Path, notify_path: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "exchanges": {name: {"enabled": False} for name in REGISTRY},
                "database_path": str(tmp_path / "ohlcv.db"),
                "port": 0,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHDOG_", "JOURNAL_"))}
    env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")
    command = [sys.executable, "-m", "feedd", "--config", str(config), "--log-format", "json"]
    stderr = tmp_path / "stderr"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(notify_path)

    async def receive(*, skip_heartbeats: bool) -> bytes:
        while True:
            message: bytes = await sock.recv(4096)
            if not (skip_heartbeats and message == b"WATCHDOG=1"):
                return message

    # A bound, not a wait: startup plus feedd's 10 s shutdown bound, with room for a busy box.
    with sock, stderr.open("wb") as err, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            run = partial(trio.run_process, command, env=env, stderr=err, check=False)
            process: trio.Process = await nursery.start(run)
            # The watchdog runs from the start, before the service is up.
            assert await receive(skip_heartbeats=False) == b"WATCHDOG=1"
            ready = await receive(skip_heartbeats=True)
            match = re.fullmatch(rb"READY=1\nSTATUS=serving on (http://127\.0\.0\.1:\d+)", ready)
            assert match, ready
            async with httpx.AsyncClient(trust_env=False) as client:
                # READY means the API answers.
                response = await client.get(match.group(1).decode() + "/health")
                assert response.status_code in (200, 503)
            assert await receive(skip_heartbeats=False) == b"WATCHDOG=1"  # and goes on
            process.send_signal(signal.SIGTERM)
            assert await receive(skip_heartbeats=True) == b"STOPPING=1\nSTATUS=shutting down"
            await process.wait()
    assert process.returncode == 0, stderr.read_text()
    records = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert records and all(set(r) >= {"time", "level", "logger", "message"} for r in records), (
        records
    )
    assert any(r["message"] == "received SIGTERM" for r in records)


def test_help_names_log_format() -> None:
    text = build_parser().format_help()
    assert "--log-format {text,json}" in text


# ----------------------------------------------------------------------------- log formats

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_error(logger: logging.Logger) -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        logger.exception("session failed")


def test_text_lines_carry_time_level_and_logger() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    logger = logging.getLogger("feedd.test")
    logger.debug("hidden")
    logger.info("hello %s", "world")
    _log_error(logger)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(TIME + " INFO feedd.test: hello world", lines[0]), lines[0]
    assert re.fullmatch(TIME + " ERROR feedd.test: session failed", lines[1]), lines[1]
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad frame"


def test_under_journald_lines_carry_priority_not_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        configure_logging("info", "text", stream)
        logger = logging.getLogger("feedd.test")
        logger.warning("slow")
        _log_error(logger)
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[0] == "<4>WARNING feedd.test: slow"
    assert lines[1] == "<3>ERROR feedd.test: session failed"
    # Every traceback line keeps the error's priority: `journalctl -p err` shows all of it.
    assert lines[2] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>ValueError: bad frame"


def test_journal_stream_of_another_file_keeps_timestamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but our stderr goes elsewhere
    with (tmp_path / "log").open("w+") as stream:
        configure_logging("info", "text", stream)
        logging.getLogger("feedd.test").info("x")
        stream.seek(0)
        assert re.fullmatch(TIME + " INFO feedd.test: x\n", stream.read())


def test_json_is_one_object_per_line() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    logger = logging.getLogger("feedd.test")
    logger.debug('quote " and\nnewline')
    _log_error(logger)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(TIME, first["time"])
    assert first == {
        "time": first["time"],
        "level": "DEBUG",
        "logger": "feedd.test",
        "message": 'quote " and\nnewline',
    }
    assert (second["level"], second["message"]) == ("ERROR", "session failed")
    assert second["exc"].startswith("Traceback (most recent call last):")
    assert second["exc"].endswith("ValueError: bad frame")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_reconfiguring_replaces_only_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", first)
    ring = Collect()  # stands in for the service's /logs ring buffer
    logging.getLogger().addHandler(ring)
    configure_logging("warning", "json", second)
    logging.getLogger("feedd.test").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1
    assert [r.getMessage() for r in ring.records] == ["once"]
    assert logging.getLogger().level == logging.WARNING


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml")
