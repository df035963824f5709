"""No backend ``if`` outside feedd/store/: code elsewhere that decides by which backend runs
(a kind compared, a backend's name as a literal, an isinstance of a concrete backend) is
refused here, so behaviour that differs by backend lives behind the store interface."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "feedd"
#: the store itself, and the config parser that reads the ``storage.backend`` key
ALLOWED = ("store/", "storageconfig.py")
NAMES = {"sqlite", "sqlite3", "postgresql", "postgres", "psycopg", "pg"}
CONCRETE = r"(SqliteBackend|PostgresBackend|Database|PgWriteConnection|Reader|PgReader)"
CODE_PATTERNS = (
    re.compile(r"\.backend\s*(==|!=|\bin\b|\bnot\s+in\b)"),
    re.compile(r"\bbackend\.kind\s*(==|!=|\bin\b|\bnot\s+in\b)"),
    re.compile(rf"isinstance\([^)]*\b{CONCRETE}\b"),
)


def violations(source: str) -> list[str]:
    """Lines of ``source`` that decide by backend: a literal naming one, or a pattern above
    (matched on the code with comments and other string literals blanked)."""
    found = []
    code = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.STRING:
            continue
        body = re.sub(r"^[rRbBuUfF]*('''|\"\"\"|'|\")", "", tok.string)
        body = re.sub(r"('''|\"\"\"|'|\")$", "", body)
        if body.lower() in NAMES:
            found.append(f"{tok.start[0]}: {code[tok.start[0] - 1].strip()}")
            continue
        # Blank the literal so that patterns only see code.
        for row in range(tok.start[0], tok.end[0] + 1):
            line = code[row - 1]
            start = tok.start[1] if row == tok.start[0] else 0
            end = tok.end[1] if row == tok.end[0] else len(line)
            code[row - 1] = line[:start] + '""'.ljust(end - start) + line[end:]
    for number, line in enumerate(code, 1):
        bare = line.split("#", 1)[0]
        if any(p.search(bare) for p in CODE_PATTERNS):
            found.append(f"{number}: {line.strip()}")
    return found


def modules() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if not p.relative_to(PACKAGE).as_posix().startswith(ALLOWED)
    )


def test_no_backend_branch_outside_the_store() -> None:
    assert len(modules()) > 50  # the scan sees the package
    found = {
        str(path.relative_to(PACKAGE)): hits
        for path in modules()
        if (hits := violations(path.read_text(encoding="utf-8")))
    }
    assert found == {}


@pytest.mark.parametrize(
    "line",
    [
        'if storage.backend == "sqlite":\n    pass\n',
        "same = a.backend != b.backend\n",
        'x = 1 if store.backend.kind == "embedded" else 2\n',
        'if text.split(":")[0] in ("postgresql", "postgres"):\n    pass\n',
        "ok = isinstance(store, SqliteBackend)\n",
        "ok = isinstance(conn, (Database, PgWriteConnection))\n",
    ],
)
def test_the_scan_catches_each_form(line: str) -> None:
    assert violations(line)


@pytest.mark.parametrize(
    "line",
    [
        '"""Copy sqlite:PATH into postgresql://host/db: the sqlite backend is the default."""\n',
        'if fault.kind == "throttle":\n    pass\n',
        "# storage.backend == 'sqlite' in a comment\n",
        'HELP = "a.backend == b"\n',
        'log.info("%s database %s", backend.location, backend.spec)\n',
    ],
)
def test_the_scan_lets_text_and_other_kinds_be(line: str) -> None:
    assert violations(line) == []
