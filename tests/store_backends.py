"""The ``backend`` fixture: each test using it runs once over SQLite and once over PostgreSQL.

Usage in a test module (a plugin; it brings tests/pgserver.py's fixtures along)::

    pytest_plugins = ["store_backends"]

``backend`` is a fresh, empty ``feedd.store.backend.Backend``: a SQLite file in ``tmp_path``
or a new database on the session's PostgreSQL server (tests/pgserver.py). A PostgreSQL case
is skipped only when the machine has no PostgreSQL binaries (and fails under CI).

``any_writer`` is the same over ``WRITERS``: each backend, then each with its writer in a
child process (``feedd.store.writeprocess``), for the tests of what a writer does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feedd.store.backend import Backend

pytest_plugins = ["pgserver"]

BACKENDS = ("sqlite", "postgresql")
#: every backend, and each with its writer in a child process
WRITERS = (*BACKENDS, *(f"{kind}, writer process" for kind in BACKENDS))


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind.endswith(", writer process"):
        from feedd.store.writeprocess import ProcessBackend

        return ProcessBackend(make_backend(kind.split(",")[0], request, tmp_path))
    if kind == "sqlite":
        from feedd.store.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "ohlcv.db")
    from feedd.store.postgres import postgres_backend

    dsn: str = request.getfixturevalue("pg_dsn")
    return postgres_backend(dsn)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, request, tmp_path)


@pytest.fixture(params=WRITERS)
def any_writer(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, request, tmp_path)
