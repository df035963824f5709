"""A real PostgreSQL server for the tests: initdb into a temp folder, loopback, a free port.

Usage in a test module (a plugin, so that every module shares one session fixture)::

    pytest_plugins = ["pgserver"]

(import names from it only under ``TYPE_CHECKING``: imported first as a plain module, pytest
could not rewrite its asserts and warns). ``pg_server`` (session) is one server for the whole
run; ``pg_dsn`` (function) a fresh database of its own and a DSN with a password
(``postgresql://feedd:PW@127.0.0.1:PORT/t_N``).
The server refuses to run as root, so under root initdb and postgres run as the ``postgres``
system user. Binaries come from Debian's ``postgresql`` package (scripts/postgres_setup.sh,
run by ``make test``); without them the tests are skipped, or fail under CI.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: the role feedd connects as (not a superuser, like a user's own setup)
USER = "feedd"
#: distinctive, so a test can assert it never shows up in a message or a log
PASSWORD = "Pg-Secret-7391"
#: the superuser, reached over the unix socket (trust) for setup and fault injection
ADMIN = "postgres"
_START_ATTEMPTS = 5


def bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "initdb").exists() and (path / "postgres").exists():
            with contextlib.suppress(ValueError):
                candidates.append((float(path.parent.name), path))
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def problem() -> str | None:
    if bindir() is not None:
        return None
    return (
        "PostgreSQL server binaries (initdb, postgres) not found: these tests need Debian's"
        " postgresql package. Run `make test` (it calls scripts/postgres_setup.sh) or"
        " `apt-get install -y postgresql`."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """One postgres process over one data folder; stop() and start() keep the folder and port."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError(problem())
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="feedd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.running = False
        self.user = USER
        self.password = PASSWORD
        #: server settings (-c name=value); durability off by default: tests, not data
        self.settings = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}
        self.settings.update(settings or {})
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            # postgres refuses root: run it as the system user, in a folder it owns
            entry = pwd.getpwnam(ADMIN)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._db_numbers = itertools.count(1)
        self._initdb()

    # -- lifecycle --------------------------------------------------------------------------

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            **self._as,
        )

    def _initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(
            self.bin / "initdb", "-D", self.data, "-U", ADMIN, "--pwfile", pwfile,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        """Start on the port it had (a new free one the first time)."""
        if self.running:
            return
        for attempt in range(_START_ATTEMPTS):
            port = self.port or _free_port()
            options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1" + "".join(
                f" -c {name}={value}" for name, value in self.settings.items()
            )
            done = self._run(
                self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w",
                "-t", "60", "start", check=False,
            )  # fmt: skip
            if done.returncode == 0:
                self.port = port
                self.running = True
                break
            if self.port or attempt == _START_ATTEMPTS - 1:
                raise RuntimeError(f"postgres did not start:\n{self.log_tail()}")
        if not self._has_role():
            self.admin(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast``: clients are disconnected at once; ``immediate``: a crash)."""
        if not self.running:
            return
        self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- databases and faults -----------------------------------------------------------------

    def admin(self, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> list[Any]:
        """Run one statement as the superuser (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(
            host=str(self.root), port=self.port, user=ADMIN, dbname=dbname, autocommit=True
        ) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def _has_role(self) -> bool:
        return bool(self.admin("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)))

    def dsn(self, dbname: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh database owned by ``feedd``; returns its name."""
        name = f"t_{next(self._db_numbers)}"
        self.admin(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def terminate(self, dbname: str | None = None, application: str | None = None) -> int:
        """pg_terminate_backend every ``feedd`` connection (to ``dbname`` only, if given; of
        ``application`` only, e.g. "feedd-writer", if given); returns how many."""
        rows = self.admin(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE usename = %s AND (%s::text IS NULL OR datname = %s)"
            " AND (%s::text IS NULL OR application_name = %s)",
            (USER, dbname, dbname, application, application),
        )
        return int(rows[0][0])

    def cpu_seconds(self) -> float:
        return server_cpu_seconds(self.data)

    def connections(self, dbname: str) -> int:
        rows = self.admin(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
            (USER, dbname),
        )
        return int(rows[0][0])


_shared: PgServer | None = None


def shared_server() -> PgServer:
    """The process's server, started at first use (and destroyed at exit at the latest: a
    scripts/ benchmark may use it without pytest)."""
    global _shared
    if _shared is None or not _shared.root.exists():
        server = PgServer()
        atexit.register(server.destroy)
        _shared = server
    _shared.start()
    return _shared


def _unavailable() -> None:
    reason = problem()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    _unavailable()
    server = shared_server()
    yield server
    server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database's DSN (with the password); the server is running again afterwards
    whatever the test did to it, and the database is dropped."""
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    pg_server.start()
    pg_server.drop_database(name)


def server_cpu_seconds(data: Path) -> float:
    """CPU seconds so far of the server whose data directory is ``data``: its live backends,
    and those that have ended (a benchmark's short connections), which the postmaster reaped.
    A function of the directory, so that a benchmark's child process can ask too."""
    import psutil

    pid = int((data / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total
