"""Every startup failure a user meets, with a real ``feedd`` process: one line on stderr that
names the cause, no traceback; exit status 2 for configuration, 1 for the rest.

Root ignores permission bits, so "not writable" and "unreadable" run feedd as root without
CAP_DAC_OVERRIDE (``setpriv``), which the owner's permission bits then bind; the read-only
mount is a tmpfs mounted ``ro`` in a mount namespace of feedd's own (``unshare --mount``); the
host that does not resolve is looked up in an empty network namespace, so no query leaves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedd.exchanges import REGISTRY

EXIT_FAILURE = 1
EXIT_CONFIG = 2
#: capabilities that let root ignore permission bits
DAC_CAPS = "-dac_override,-dac_read_search"
QUIET = {name: {"enabled": False} for name in REGISTRY}


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Give back what a test took away, so that pytest can remove it.
    for path in (tmp_path, *tmp_path.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def write_config(folder: Path, **doc: Any) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({"exchanges": QUIET, "port": 0, **doc}))
    path.chmod(0o644)
    return path


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "feedd", "--log-level", "warning", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDD_", "CREDENTIALS_"))}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd="/")


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, cause: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1, result.stderr
    assert "ERROR feedd: " in lines[0] and cause in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def bound_by_permissions() -> tuple[str, ...]:
    """A prefix under which feedd obeys permission bits, as any user but root does."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv(1) to drop CAP_DAC_OVERRIDE")
    return ("setpriv", f"--bounding-set={DAC_CAPS}", "--")


def can_unshare(*flags: str) -> tuple[str, ...]:
    prefix = ("unshare", *flags)
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a namespace")
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"unshare {' '.join(flags)} is not permitted: {probe.stderr!r}")
    return prefix


# ----------------------------------------------------------------------------- the database


def test_database_file_not_sqlite(folder: Path) -> None:
    (folder / "ohlcv.db").write_bytes(b"these are not the bytes of a SQLite database\n" * 50)
    config = write_config(folder, database_path="ohlcv.db")
    result = run("--config", str(config))
    assert_one_line(result, EXIT_FAILURE, "file is not a SQLite database")
    assert str(folder / "ohlcv.db") in result.stderr


def test_database_folder_not_writable(folder: Path) -> None:
    prefix = bound_by_permissions()
    data = folder / "data"
    data.mkdir()
    data.chmod(0o555)
    config = write_config(folder, database_path="data/ohlcv.db")
    result = run("--config", str(config), prefix=prefix)
    assert_one_line(result, EXIT_FAILURE, f"cannot create ohlcv.db in {data}: permission denied")


def test_database_folder_not_creatable(folder: Path) -> None:
    prefix = bound_by_permissions()
    config = write_config(folder, database_path="data/ohlcv.db")
    folder.chmod(0o555)
    result = run("--config", str(config), prefix=prefix)
    assert_one_line(
        result, EXIT_FAILURE, f"cannot create the database folder {folder / 'data'}: Permission"
    )


def test_database_folder_is_a_file(folder: Path) -> None:
    (folder / "data").write_text("a file where the folder should be")
    config = write_config(folder, database_path="data/ohlcv.db")
    result = run("--config", str(config))
    assert_one_line(result, EXIT_FAILURE, f"database folder {folder / 'data'} is a file")


def test_database_path_is_a_folder(folder: Path) -> None:
    (folder / "ohlcv.db").mkdir()
    config = write_config(folder, database_path="ohlcv.db")
    result = run("--config", str(config))
    assert_one_line(result, EXIT_FAILURE, "is a folder, not a database file")


@pytest.mark.parametrize("below", ["", "sub"])
def test_database_under_a_read_only_mount(folder: Path, below: str) -> None:
    prefix = can_unshare("--mount")
    mount = folder / "ro"
    mount.mkdir()
    config = write_config(folder, database_path=str(mount / below / "ohlcv.db"))
    # The mount lives in feedd's own mount namespace: nothing to undo if the test dies.
    script = 'mount -t tmpfs -o ro feedd-test "$0" && exec "$@"'
    command = ("sh", "-c", script, str(mount), sys.executable, "-m", "feedd")
    result = subprocess.run(
        [*prefix, *command, "--log-level", "warning", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "mount:" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr!r}")
    cause = "is on a read-only file system" if not below else "Read-only file system"
    assert_one_line(result, EXIT_FAILURE, cause)


# ----------------------------------------------------------------------------- the HTTP API


def test_port_in_use(folder: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(folder, port=port, database_path="ohlcv.db")
        result = run("--config", str(config))
    assert_one_line(result, EXIT_FAILURE, f"cannot listen on 127.0.0.1:{port}: the port is in use")


def test_host_not_on_this_machine(folder: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never a local address. Binding sends
    # nothing anywhere.
    config = write_config(folder, host="192.0.2.1", api_token="t0ken", database_path="ohlcv.db")
    result = run("--config", str(config))
    assert_one_line(result, EXIT_FAILURE, "192.0.2.1 is not an address of this machine")
    assert "t0ken" not in result.stderr


def test_host_that_does_not_resolve(folder: Path) -> None:
    prefix = can_unshare("--net")
    config = write_config(
        folder, host="feedd-test.invalid", api_token="t0ken", database_path="ohlcv.db"
    )
    result = run("--config", str(config), prefix=prefix)
    assert_one_line(result, EXIT_FAILURE, "host 'feedd-test.invalid' does not resolve")


# ----------------------------------------------------------------------------- the config


def test_config_unreadable(folder: Path) -> None:
    prefix = bound_by_permissions()
    config = write_config(folder)
    config.chmod(0o000)
    result = run("--config", str(config), prefix=prefix)
    assert_one_line(result, EXIT_CONFIG, f"cannot read config file '{config}': Permission denied")


def test_config_is_a_folder(folder: Path) -> None:
    result = run("--config", str(folder))
    assert_one_line(result, EXIT_CONFIG, "Is a directory")


def test_config_missing(folder: Path) -> None:
    result = run("--config", str(folder / "absent.json"))
    assert_one_line(result, EXIT_CONFIG, "not found")


def test_config_not_json(folder: Path) -> None:
    path = folder / "config.json"
    path.write_text('{"port": 1,}')
    result = run("--config", str(path))
    assert_one_line(result, EXIT_CONFIG, "is not valid JSON")


def test_failure_in_json_logs_keeps_its_level(folder: Path) -> None:
    (folder / "ohlcv.db").mkdir()
    config = write_config(folder, database_path="ohlcv.db")
    result = run("--config", str(config), "--log-format", "json")
    assert result.returncode == EXIT_FAILURE
    [line] = result.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and "is a folder" in record["message"]


def test_permissions_really_bind_feedd(folder: Path) -> None:
    # The premise of the tests above: under the prefix, a 0555 folder is not writable.
    prefix = bound_by_permissions()
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    code = f"open({str(probe / 'x')!r}, 'w')"
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "PermissionError" in result.stderr
