"""sd_notify against a fake notify socket, the watchdog under the autojump clock, and the
systemd unit and install script checked by the tools that will run them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from feedd import sdnotify

REPO = Path(__file__).parent.parent
UNIT = REPO / "scripts" / "feedd.service"
INSTALL = REPO / "scripts" / "install-service.sh"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's end: a datagram socket on a short path (AF_UNIX paths stop at 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(folder, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock
    shutil.rmtree(folder)


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram queued so far; sendto() delivers before it returns, so none is in flight."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_reloading_is_stamped_with_the_monotonic_clock(receiver: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = received(receiver)
    fields = dict(field.split("=", 1) for field in message.decode().split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    assert fields["STATUS"] == "reloading the config file"


def test_without_notify_socket_nothing_is_sent() -> None:
    assert sdnotify.notify("READY=1") is False


def test_fields_go_out_as_one_datagram(receiver: socket.socket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=serving on http://127.0.0.1:3000") is True
    assert received(receiver) == [b"READY=1\nSTATUS=serving on http://127.0.0.1:3000"]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"feedd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1") is True
        assert received(sock) == [b"STOPPING=1"]


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/path", "/nonexistent/notify"])
def test_unusable_socket_is_not_an_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("WATCHDOG=1") is False


@pytest.mark.parametrize("field", ["READY", "STATUS=two\nlines"])
def test_malformed_fields_are_refused(receiver: socket.socket, field: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        sdnotify.notify(field)
    assert received(receiver) == []


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "other", None),  # inherited from a parent the watchdog is meant for
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + (pid == "other")))
    assert sdnotify.watchdog_interval() == expected


async def test_watchdog_beats_at_half_the_interval(
    receiver: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sdnotify.run_watchdog, 10.0)
        assert received(receiver) == [b"WATCHDOG=1"]  # at once, before the first period
        await trio.sleep(4.999)
        assert received(receiver) == []
        await trio.sleep(0.002)
        assert received(receiver) == [b"WATCHDOG=1"]
        await trio.sleep(50)
        assert received(receiver) == [b"WATCHDOG=1"] * 10
        nursery.cancel_scope.cancel()
    await trio.sleep(60)
    assert received(receiver) == []  # cancelled means silent


async def test_a_wedged_loop_stops_the_heartbeat(
    receiver: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sdnotify.run_watchdog, 10.0)
        received(receiver)
        # Time passes while the loop is blocked (a synchronous call that never yields):
        # no beat can go out until the loop runs again.
        autojump_clock.jump(30)
        assert received(receiver) == []
        # Once the loop runs again, the overdue beat goes out (then the watchdog sleeps anew).
        await trio.testing.wait_all_tasks_blocked()
        assert received(receiver) == [b"WATCHDOG=1"]
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- unit and script


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
@pytest.mark.parametrize("credential", [False, True])
def test_unit_verifies(tmp_path: Path, credential: bool) -> None:
    # verify insists that ExecStart's binary exists (it never runs it): any executable will do.
    text = UNIT.read_text()
    assert "ExecStart=/opt/feedd/.venv/bin/feedd " in text
    if credential:
        # The commented example, as an operator would enable it.
        assert "\n#LoadCredential=api_token:/etc/feedd/api_token\n" in text
        text = text.replace("\n#LoadCredential=", "\nLoadCredential=")
    unit = tmp_path / "feedd.service"
    unit.write_text(text.replace("/opt/feedd/.venv/bin/feedd", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 0, result.stderr
    # Anything verify finds worth saying about our unit is a finding, even with status 0.
    assert "feedd.service" not in result.stderr, result.stderr


def test_unit_keeps_what_feedd_relies_on() -> None:
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[0] not in "#;")
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30"
    # feedd bounds its own shutdown at 10 s (service.SHUTDOWN_TIMEOUT_S); SIGKILL must wait.
    assert int(settings["TimeoutStopSec"]) >= 20
    assert settings["StateDirectory"] == "feedd" and settings["ConfigurationDirectory"] == "feedd"
    # SIGHUP reloads (it ended feedd before); the last ExecReload= line is the signal.
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "ExecReload=/opt/feedd/.venv/bin/feedd check-config" in lines
    assert "Environment=FEEDD_CONFIG=/etc/feedd/config.json" in lines
    assert settings["ExecStart"].endswith("--config ${FEEDD_CONFIG}")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not found")
def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(INSTALL, os.X_OK)
