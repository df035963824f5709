"""Optional features cost no memory when off: starting the service imports no NATS client,
no PostgreSQL driver and no Arrow (each is imported where its feature starts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: top-level packages only a configured feature may import
OPTIONAL = ("nats", "psycopg", "psycopg_binary", "psycopg_c", "pyarrow")


@pytest.mark.parametrize("module", ["feedd.service", "feedd.cli", "feedd.web.app"])
def test_importing_the_service_pulls_in_no_optional_client(module: str) -> None:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
