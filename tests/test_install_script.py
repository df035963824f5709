"""scripts/install-service.sh under --root: the real build, install, config check, switch and
pruning inside a temporary folder, with the systemd and root-only steps printed instead of run
(this machine has no systemd). The scenario costs two venv installs: ~40 s, more when busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from test_wheel import CLUTTER, build_wheel, pins

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-service.sh"
UNIT = REPO / "scripts" / "feedd.service"
SKIPPED = "install-service: skipped (--root): "


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = sys.executable  # its venvs are based on the same interpreter
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def skipped(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The root and systemd steps the script would have run, in order."""
    return [line[len(SKIPPED) :] for line in result.stdout.splitlines() if line.startswith(SKIPPED)]


def test_usage_errors_change_nothing(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0 and "--uninstall" in result.stdout
    for args, message in [
        (["--bogus"], "unknown option --bogus"),
        (["relative/prefix"], "PREFIX must be an absolute path"),
        (["/opt/a", "/opt/b"], "one PREFIX at most"),
        (["--wheel", str(tmp_path / "none.whl")], "no wheel at"),
    ]:
        result = run(tmp_path, *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    assert sorted(tmp_path.iterdir()) == []


def test_uninstall_removes_only_what_it_installed(tmp_path: Path) -> None:
    # A PREFIX given by mistake is not feedd's: never rm -rf'd.
    precious = tmp_path / "srv" / "other" / "data.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("keep me")
    result = run(tmp_path, "--uninstall", "/srv/other")
    assert result.returncode == 1 and "no feedd installed" in result.stderr
    assert precious.read_text() == "keep me"


def check_config_exists(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.json"
    probe.write_text('{"exchanges": {}}')
    command = [sys.executable, "-m", "feedd", "check-config", str(probe)]
    return subprocess.run(command, capture_output=True).returncode == 0


def release_names(prefix: Path) -> set[str]:
    return {path.name for path in (prefix / "releases").iterdir()}


def test_upgrade_refused_then_done_then_uninstalled(tmp_path: Path) -> None:
    if not check_config_exists(tmp_path):
        pytest.skip("this feedd has no `feedd check-config`, which the script runs")
    root = tmp_path / "root"
    prefix, config = root / "opt" / "feedd", root / "etc" / "feedd" / "config.json"
    unit = root / "etc" / "systemd" / "system" / "feedd.service"
    venv = prefix / ".venv"
    # What an earlier run left: the release in service, an older one, and the config.
    for name in ("20000101T000000Z", "20000102T000000Z"):
        (prefix / "releases" / name).mkdir(parents=True)
    venv.symlink_to("releases/20000102T000000Z")
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"port": "three thousand"}))
    clutter_before = {p.name for p in REPO.iterdir() if CLUTTER(str(REPO), [p.name])}

    # An upgrade onto a config the new release rejects changes nothing in service.
    wheel, _ = build_wheel(tmp_path / "wheel")
    refused = run(root, "--wheel", str(wheel))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "port" in refused.stderr and "is not valid for this release" in refused.stderr
    assert os.readlink(venv) == "releases/20000102T000000Z"
    assert release_names(prefix) == {"20000101T000000Z", "20000102T000000Z"}
    assert not unit.exists()
    assert [step for step in skipped(refused) if "systemctl" in step] == []

    # With no config it writes one; it builds the checkout's wheel into a new release, switches
    # to it, keeps the release it replaced for a rollback and drops older ones.
    config.unlink()
    done = run(root)
    assert done.returncode == 0, done.stdout + done.stderr
    (release,) = release_names(prefix) - {"20000102T000000Z"}
    assert release_names(prefix) == {release, "20000102T000000Z"}
    assert os.readlink(venv) == f"releases/{release}"
    assert "ln -sfn releases/20000102T000000Z /opt/feedd/.venv" in done.stdout
    assert {p.name for p in prefix.iterdir()} == {".venv", "releases", "README.md"}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from feedd.web import static; print(static.WEB_DIR)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    assert Path(where.stdout.strip()) == prefix / "releases" / release / site / "feedd/webroot"
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed.stdout)}
    installed.pop("feedd")
    assert {name: pins().get(name) for name in installed} == installed
    written = json.loads(config.read_text())
    expected = json.loads((REPO / "config.json").read_text())
    storage = {"backend": "sqlite", "path": "/var/lib/feedd/ohlcv.db"}
    assert written == {**expected, "storage": storage}
    assert config.stat().st_mode & 0o777 == 0o640
    assert unit.read_text() == UNIT.read_text()
    assert skipped(done)[-4:-1] == [
        "systemctl daemon-reload",
        "systemctl enable feedd.service",
        "systemctl restart feedd.service",
    ]
    assert done.stdout.index("checking ") < done.stdout.index("systemctl daemon-reload")
    # The build ran on a copy: the checkout gained no build/ or egg-info.
    assert {p.name for p in REPO.iterdir() if CLUTTER(str(REPO), [p.name])} == clutter_before

    # Uninstall: the unit and the code go, the configuration stays.
    gone = run(root, "--uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not prefix.exists() and not unit.exists() and config.exists()
    assert skipped(gone) == ["systemctl disable --now feedd.service", "systemctl daemon-reload"]
