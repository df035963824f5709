"""Log lines: text for people, one journal entry per record with its priority under journald,
JSON objects; a real feedd's failure under journald."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedd.logsetup import configure_logging

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
    # One line per record: journald makes one entry of each line, so a traceback printed as
    # is became one entry per line, and all but the first lost their context.
    assert len(lines) == 2, lines
    assert lines[0] == "<4>WARNING feedd.test: slow"
    assert lines[1].startswith(
        "<3>ERROR feedd.test: session failed\\nTraceback (most recent call last):\\n"
    )
    assert lines[1].endswith("\\nValueError: bad frame")
    assert 'raise ValueError("bad frame")' in lines[1]


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


def test_under_journald_json_records_carry_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        configure_logging("info", "json", stream)
        logger = logging.getLogger("feedd.test")
        logger.warning("slow")
        _log_error(logger)
        stream.seek(0)
        lines = stream.read().splitlines()
    assert len(lines) == 2, lines
    # journald strips the prefix (SyslogLevelPrefix=) and stores the JSON as the message.
    for line, priority, level in zip(lines, ("<4>", "<3>"), ("WARNING", "ERROR"), strict=True):
        assert line.startswith(priority)
        assert json.loads(line.removeprefix(priority))["level"] == level
    assert "ValueError: bad frame" in json.loads(lines[1][3:])["exc"]


def test_message_with_newlines_under_journald_stays_one_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        configure_logging("info", "text", stream)
        logging.getLogger("feedd.test").error("two\nlines\r\nand a\rreturn")
        stream.seek(0)
        text = stream.read()
    assert text == "<3>ERROR feedd.test: two\\nlines\\nand a\\rreturn\n"


def test_real_feedd_under_journald(tmp_path: Path) -> None:
    """A failing feedd whose stderr is the journal's stream: every line has a priority."""
    config = tmp_path / "config.json"
    (tmp_path / "ohlcv.db").mkdir()  # a folder where the database should be
    config.write_text(json.dumps({"database_path": "ohlcv.db", "port": 0}))
    journal = tmp_path / "journal"
    with journal.open("wb") as stream:
        stat = os.fstat(stream.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDD_")}
        env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        result = subprocess.run(
            [sys.executable, "-m", "feedd", "--config", str(config)],
            stderr=stream,
            env=env,
            timeout=60,
        )
    lines = journal.read_text().splitlines()
    assert result.returncode == 1
    assert lines and all(re.match(r"<[2-7]>[A-Z]+ ", line) for line in lines), lines
    assert lines[-1].startswith("<3>ERROR feedd: database path ")
    assert not [line for line in lines if line.startswith("<3>") and line != lines[-1]]
