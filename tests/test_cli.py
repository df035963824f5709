"""The ``feedd`` command: as systemd runs it (notify socket, watchdog, SIGTERM), its help,
``check-config``, the config lookup; feedctl tail's error groups."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from feedd import feedctl
from feedd.cli import build_parser
from feedd.ctl import tail
from feedd.ctl.client import Unreachable
from feedd.exchanges import REGISTRY

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


def test_help_names_lookup_secrets_signals_and_check_config() -> None:
    text = build_parser().format_help()
    for words in ("check-config", "$FEEDD_CONFIG", "$FEEDD_API_TOKEN", "SIGHUP", "exit status"):
        assert words in text, words


# ----------------------------------------------------------------------------- check-config


def feedd(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDD_", "CREDENTIALS_"))}
    return subprocess.run(
        [sys.executable, "-m", "feedd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**base, **env},
    )


QUIET = {"exchanges": {name: {"enabled": False} for name in REGISTRY}, "port": 0}


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "feedd.json"
    path.write_text(json.dumps({"exchanges": {"okx_futures": {"symbols": ["BTCUSDT"]}}}))
    result = feedd("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == f"{path}: OK (1 of 1 exchanges enabled, 1 symbols; serves 127.0.0.1:3000)\n"
    )
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""


def test_check_config_refuses_with_one_line_and_status_2(tmp_path: Path) -> None:
    path = tmp_path / "feedd.json"
    path.write_text(json.dumps({"host": "0.0.0.0"}))
    result = feedd("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "config error: host: binding 0.0.0.0 (not loopback) requires api_token" in line


def test_check_config_finds_the_file_as_startup_does(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QUIET))
    local = feedd("check-config", cwd=tmp_path)
    assert local.returncode == 0 and local.stdout.startswith("config.json: OK"), local
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"port": "x"}))
    from_env = feedd("check-config", cwd=tmp_path, FEEDD_CONFIG=str(other))
    assert from_env.returncode == 2 and "port: expected an integer" in from_env.stderr
    given = feedd("--config", str(other), "check-config", cwd=tmp_path)
    assert given.returncode == 2
    positional = feedd("check-config", "config.json", cwd=tmp_path, FEEDD_CONFIG=str(other))
    assert positional.returncode == 0


def test_check_config_with_a_token_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"host": "0.0.0.0"}))
    result = feedd("check-config", str(path), FEEDD_API_TOKEN="tok-SECRET-1")
    assert result.returncode == 0, result.stderr
    assert "api token from $FEEDD_API_TOKEN" in result.stdout
    assert "tok-SECRET-1" not in result.stdout + result.stderr
    # The overrides of the command line meet the same rules.
    refused = feedd("--host", "0.0.0.0", "check-config", str(tmp_path / "absent.json"))
    assert refused.returncode == 2
    (tmp_path / "plain.json").write_text("{}")
    exposed = feedd("--host", "0.0.0.0", "check-config", str(tmp_path / "plain.json"))
    assert exposed.returncode == 2 and "--host: binding 0.0.0.0" in exposed.stderr


async def test_log_names_the_config_file_and_token_source_never_the_token(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**QUIET, "database_path": str(tmp_path / "ohlcv.db")}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDD_", "NOTIFY_"))}
    env["FEEDD_API_TOKEN"] = "tok-SECRET-2"
    command = [sys.executable, "-m", "feedd", "--config", str(path), "--log-format", "json"]
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
        assert process.stderr is not None
        received = b""
        # Serving is logged after the config lines: read up to it.
        while b"feedd serving on" not in received:
            chunk = await process.stderr.receive_some()
            assert chunk, received
            received += chunk
        process.send_signal(signal.SIGTERM)
        async for chunk in process.stderr:
            received += chunk
        assert await process.wait() == 0
    text = received.decode()
    messages = [json.loads(line)["message"] for line in text.splitlines()]
    assert f"config file {path} (--config)" in messages
    assert "api token from $FEEDD_API_TOKEN" in messages
    assert "tok-SECRET-2" not in text


# ----------------------------------------------------------------------------- feedctl tail


def test_tail_shows_one_error_of_a_group(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two errors at once (the body's and the library's reader task's) arrive grouped."""

    async def follow(args: object) -> None:
        async def fail(exc: Exception) -> None:
            raise exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, Unreachable("lost the connection to feedd (1006)"))
            nursery.start_soon(fail, ValueError("reader task"))

    monkeypatch.setattr(tail, "follow", follow)
    assert feedctl.main(["--url", "http://127.0.0.1:9", "tail"]) == 3
    assert capsys.readouterr().err == "feedctl: lost the connection to feedd (1006)\n"
