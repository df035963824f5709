"""The wheel an operator installs: built from this checkout, installed into a fresh venv with
constraints.txt, run from an empty folder, it serves the whole dashboard and carries the
licences. Costs one wheel build and one install from the package index (see the fixtures)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
import trio
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
CONSTRAINTS = REPO / "constraints.txt"
WEB = REPO / "web"
#: a working checkout's clutter: the wheel is built from a copy without it
CLUTTER = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "dist", "artifacts", "*.egg-info", "__pycache__",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "node_modules",
)  # fmt: skip
#: what a build may say that would turn into an error with a later setuptools or pip
WARNING = re.compile(r"deprecat|BuildBackendWarning|SetuptoolsWarning|package init file", re.I)


def web_files() -> list[str]:
    return sorted(p.relative_to(WEB).as_posix() for p in WEB.rglob("*") if p.is_file())


def pins() -> dict[str, str]:
    """constraints.txt as canonical name -> exact version."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(requirement.name)] = spec.version
    return out


# ----------------------------------------------------------------------------- fast checks


def test_every_package_is_listed() -> None:
    # pyproject lists packages (feedd.webroot cannot be found): a new one must be added there.
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "feedd").rglob("__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(on_disk | {"feedd.webroot"})
    assert setuptools["package-dir"] == {"feedd.webroot": "web"}


def test_constraints_pin_every_requirement() -> None:
    document = tomllib.loads(PYPROJECT.read_text())
    project = document["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["dev"],
        *document["build-system"]["requires"],
        "pip",
    ]
    pinned = pins()
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert problems == [], "constraints.txt is stale, run `make constraints`: " + "; ".join(
        problems
    )


# ----------------------------------------------------------------------------- the wheel


def build_wheel(folder: Path) -> tuple[Path, str]:
    """A wheel of the checkout in ``folder``, and what its build printed. Built from a copy:
    setuptools writes build/ and feedd.egg-info into the tree it builds. ~4 s."""
    source = folder / "source"
    shutil.copytree(REPO, source, ignore=CLUTTER, symlinks=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose",
         "--build-constraint", str(CONSTRAINTS), "--wheel-dir", str(folder / "dist"),
         str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    shutil.rmtree(source)
    (path,) = (folder / "dist").glob("feedd-*.whl")
    return path, log


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_build_prints_no_warning(wheel: tuple[Path, str]) -> None:
    _, log = wheel
    assert [line for line in log.splitlines() if WARNING.search(line)] == []


def test_wheel_carries_the_dashboard_and_the_licences(wheel: tuple[Path, str]) -> None:
    path, _ = wheel
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for name in web_files():
            assert archive.read(f"feedd/webroot/{name}") == (WEB / name).read_bytes(), name
        (info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = archive.read(f"{info}/METADATA").decode()
        licences = {name for name in names if name.startswith(f"{info}/licenses/")}
    assert {name.split("/")[0] for name in names} == {"feedd", info}
    assert licences == {
        f"{info}/licenses/LICENSE",
        f"{info}/licenses/web/vendor/lightweight-charts.LICENSE",
        f"{info}/licenses/web/vendor/vue.LICENSE",
    }
    assert "License-Expression: MIT AND Apache-2.0" in metadata.splitlines()
    assert "Copyright (c) 2026 the feedd authors" in (REPO / "LICENSE").read_text()


@pytest.fixture(scope="module")
def venv(wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed as constraints.txt pins it. ~5 s with pip's
    cache warm: the dependencies come from the index (this venv's own site-packages cannot
    serve as a wheel source). The venv gets no pip: this pip installs into it (--python)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
         "--quiet", "-c", str(CONSTRAINTS), str(wheel[0])],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return root


def clean_env() -> dict[str, str]:
    """This environment without what would point the venv at the checkout or change feedd."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FEEDD_WEB_DIR", "FEEDD_CONFIG",
            "FEEDD_API_TOKEN", "CREDENTIALS_DIRECTORY"}  # fmt: skip
    return {name: value for name, value in os.environ.items() if name not in drop}


def test_installed_versions_are_the_pinned_ones(venv: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "list",
         "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(result.stdout)}
    pinned = pins()
    assert installed.pop("feedd") == "0.1.0"
    assert {name: pinned.get(name) for name in installed} == installed


async def test_installed_wheel_serves_the_whole_dashboard(venv: Path, tmp_path: Path) -> None:
    run, etc = tmp_path / "run", tmp_path / "etc"
    run.mkdir()
    etc.mkdir()
    config = etc / "config.json"
    config.write_text(json.dumps({"exchanges": {}, "port": 0, "database_path": "ohlcv.db"}))
    # The files come from the venv, not from the checkout: nothing there leads back to it.
    where = await trio.run_process(
        [str(venv / "bin" / "python"), "-c", "from feedd.web import static; print(static.WEB_DIR)"],
        cwd=run,
        env=clean_env(),
        capture_stdout=True,
    )
    assert Path(where.stdout.decode().strip()).is_relative_to(venv), where.stdout
    process = await trio.lowlevel.open_process(
        [str(venv / "bin" / "feedd"), "--config", str(config)],
        cwd=run,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = bytearray()
    serving = trio.Event()
    url = ""

    async def read_log() -> None:
        nonlocal url
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)
            found = re.search(rb"serving on (http://\S+);", stderr)
            if found and not serving.is_set():
                url = found.group(1).decode()
                serving.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_log)
            with trio.fail_after(60):
                await serving.wait()
            async with httpx.AsyncClient(base_url=url) as client:
                pages = {"/": "index.html", "/chart.html": "chart.html"}
                pages.update({f"/{name}": name for name in web_files()})
                for page, name in pages.items():
                    response = await client.get(page)
                    assert response.status_code == 200, (page, response.text[:200])
                    assert response.content == (WEB / name).read_bytes(), page
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await process.wait() == 0, stderr.decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert list(run.iterdir()) == []  # the working folder stays empty
    assert (etc / "ohlcv.db").exists()
