"""``feedd migrate``: exact copies with holes kept, upsert rules on the target, resumption after
Ctrl-C and SIGKILL of a real process, verification, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from feedd import cli
from feedd.candle import Candle, Source
from feedd.store import codec
from feedd.store.backend import Backend
from feedd.store.coverage import SeriesCoverage
from feedd.store.database import Database
from feedd.store.postgres import postgres_backend
from feedd.store.sqlite import SqliteBackend

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

T0 = 1_700_000_040_000  # a minute boundary
M = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: open time indexes left out of the source: holes its coverage must keep
HOLES = {3, 4, 5, 11, 40}
N = 60
#: values whose exact text must survive (trailing zeros, tiny, many digits)
VALUES = ("1.50", "0.00000001", "94172.40", "12413747.23840", "100", "0.0")

Row = tuple[int, str, str, str, str, str, str, int | None, int]


def candle(
    t: int, *, symbol: str = "BTCUSDT", close: str = "1.50", closed: bool = True,
    source: Source = Source.WS, trades: int | None = 42, exchange: str = "binance_futures",
) -> Candle:  # fmt: skip
    return Candle(exchange, symbol, "1m", t, "100.0", "101.25", "0.00000001", close,
                  "12413747.23840", "0.0", trades, closed, source)  # fmt: skip


def source_candles() -> list[Candle]:
    """Two venues, two symbols each: holes, every source, trades missing on some, exact text,
    and a forming last candle."""
    out = []
    for exchange in ("binance_futures", "okx_futures"):
        for symbol in SYMBOLS:
            for i in range(N):
                if i in HOLES:
                    continue
                out.append(
                    candle(
                        T0 + i * M,
                        symbol=symbol,
                        exchange=exchange,
                        close=VALUES[i % len(VALUES)],
                        closed=i < N - 1,
                        source=Source(i % 3),
                        trades=None if i % 4 == 0 else i,
                    )
                )
    return out


def make_store(path: Path, candles: list[Candle], jobs: int = 2) -> None:
    db = Database.open(path)
    try:
        db.write(candles)
        for n in range(jobs):
            doc = {"id": f"job{n}", "created_at": 1000 + n, "state": "done", "per_symbol": []}
            db.write_job([], f"job{n}", 1000 + n, json.dumps(doc))
    finally:
        db.close()


def stored(path: Path) -> list[tuple[str, str, Row]]:
    """Every candle row of a SQLite store as exact text, with its series' names, in key order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT s.exchange, s.symbol, c.open_time, c.open, c.high, c.low, c.close, c.volume,"
            " c.quote_volume, c.trades, c.flags FROM candles c JOIN series s ON s.id = c.series"
            " ORDER BY s.exchange, s.symbol, c.open_time"
        ).fetchall()
    finally:
        conn.close()
    return [
        (r[0], r[1], (r[2], *(codec.decode_str(v) for v in r[3:9]), r[9], r[10]))  # type: ignore[misc]
        for r in rows
    ]


class Store:
    """A store on either backend, as ``feedd migrate`` names it, read back for comparison."""

    def __init__(self, backend: Backend, spec: str) -> None:
        self.backend = backend
        self.spec = spec

    def write(self, candles: list[Candle]) -> None:
        db = self.backend.open_writer(busy_timeout_ms=5000)
        try:
            db.write(candles)
        finally:
            db.close()

    def _pg(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.spec, autocommit=True) as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]

    def rows(self) -> list[tuple[str, str, Row]]:
        if self.backend.kind == "sqlite":
            return stored(Path(self.spec.removeprefix("sqlite:")))
        found = self._pg(
            "SELECT s.exchange, s.symbol, c.open_time, c.open::text, c.high::text, c.low::text,"
            " c.close::text, c.volume::text, c.quote_volume::text, c.trades, c.flags"
            " FROM candles c JOIN series s ON s.id = c.series"
            ' ORDER BY s.exchange COLLATE "C", s.symbol COLLATE "C", c.open_time'
        )
        return [(r[0], r[1], tuple(r[2:])) for r in found]  # type: ignore[misc]

    def count(self) -> int:
        """Candles held (0 before the migration made the store)."""
        if self.backend.kind == "sqlite":
            path = Path(self.spec.removeprefix("sqlite:"))
            if not path.exists():
                return 0
            try:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
                try:
                    return int(conn.execute("SELECT count(*) FROM candles").fetchone()[0])
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                return 0  # no schema yet
        try:
            return int(self._pg("SELECT count(*) FROM candles")[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def jobs(self) -> dict[str, tuple[int, str]]:
        if self.backend.kind == "sqlite":
            conn = sqlite3.connect(self.spec.removeprefix("sqlite:"))
            try:
                found = conn.execute("SELECT id, created_at, doc FROM jobs").fetchall()
            finally:
                conn.close()
        else:
            found = self._pg("SELECT id, created_at, doc FROM jobs")
        return {i: (c, d) for i, c, d in found}

    def coverage(self) -> list[SeriesCoverage]:
        async def read() -> list[SeriesCoverage]:
            reader = self.backend.open_reader()
            try:
                return await reader.coverage()
            finally:
                reader.close()

        return trio.run(read)


def sqlite_store(path: Path) -> Store:
    return Store(SqliteBackend(path), f"sqlite:{path}")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store to migrate into, on each backend."""
    if request.param == "sqlite":
        return sqlite_store(tmp_path / "sub" / "target.db")
    dsn: str = request.getfixturevalue("pg_dsn")
    return Store(postgres_backend(dsn), dsn)


def migrate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``feedd migrate ARGS`` in this process: (exit status, stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        parser = cli.build_parser()
        parsed = parser.parse_args(["migrate", *args])
        from feedd import migrate as module

        code = module.run(parsed, stdout=out, stderr=err)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return code, out.getvalue(), err.getvalue()


def summary(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    make_store(path, source_candles())
    return path


# --- copies ------------------------------------------------------------------------------


def test_copies_exactly_with_holes_jobs_and_coverage(source: Path, target: Store) -> None:
    code, out, err = migrate("--from", f"sqlite:{source}", "--to", target.spec, "--json")
    assert code == 0, err
    doc = summary(out)
    rows = len(source_candles())
    assert doc["rows_total"] == doc["rows_copied"] == rows
    assert (doc["series"], doc["verified"], doc["jobs"], doc["ok"]) == (4, 4, 2, True)
    assert doc["mismatches"] == []
    assert target.rows() == stored(source)
    assert len(target.rows()) == rows
    # Coverage follows from the writes: the same runs, the holes where the source has them.
    original = sqlite_store(source)
    assert target.coverage() == original.coverage()
    (first, *_) = target.coverage()
    assert [(h.start, h.end) for h in first.missing] == [
        (T0 + 3 * M, T0 + 5 * M), (T0 + 11 * M, T0 + 11 * M), (T0 + 40 * M, T0 + 40 * M),
    ]  # fmt: skip
    assert first.last_open_time == T0 + (N - 2) * M  # the forming last one is not coverage
    copied = target.jobs()
    (progress,) = (i for i in copied if i.startswith("migrate-"))
    assert json.loads(copied.pop(progress)[1])["kind"] == "migrate"
    assert copied == original.jobs()


def test_round_trip_through_postgresql(
    source: Path, tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    """SQLite -> PostgreSQL (the DSN from $FEEDD_DATABASE_URL) -> SQLite gives back every row,
    job and hole; the password is never printed."""
    env = {**os.environ, "FEEDD_DATABASE_URL": pg_dsn}
    code, out, err = migrate("--from", f"sqlite:{source}", "--json", env=env)
    assert code == 0, err
    assert summary(out)["target"] == pg_dsn.replace(pg_server.password, "***")
    back = sqlite_store(tmp_path / "back.db")
    code, out2, err2 = migrate("--from", pg_dsn, "--to", back.spec, "--json")
    assert code == 0, err2
    assert summary(out2)["rows_copied"] == len(source_candles())
    assert pg_server.password not in out + err + out2 + err2
    assert back.rows() == stored(source)
    original = sqlite_store(source)
    assert back.coverage() == original.coverage()
    # The source's jobs went through; the progress row of the first leg did not.
    kept = {k: v for k, v in back.jobs().items() if not k.startswith("migrate-")}
    assert kept == original.jobs()


def test_text_summary_and_sqlite_url_form(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    code, out, err = migrate("--from", f"sqlite://{source}", "--to", f"sqlite:{target}")
    assert code == 0, err
    assert "verified" in out and "all 4 series equal" in out, out
    assert f"migrating sqlite:{source} -> sqlite:{target}: 4 series" in err
    assert stored(target) == stored(source)


def test_a_closed_candle_in_the_target_is_never_regressed(source: Path, target: Store) -> None:
    """The target already has the candle the source still has forming (a collector closed
    it): it stays closed, and the verification names the series and the open time."""
    last = T0 + (N - 1) * M
    target.write([candle(last, close="7.77", source=Source.REST)])
    code, out, err = migrate("--from", f"sqlite:{source}", "--to", target.spec, "--json")
    assert code == 1, err
    doc = summary(out)
    assert doc["ok"] is False
    assert doc["mismatches"] == [
        {"exchange": "binance_futures", "symbol": "BTCUSDT", "interval": "1m",
         "source_rows": N - len(HOLES), "target_rows": N - len(HOLES), "first_difference": last}
    ]  # fmt: skip
    kept = [
        r for ex, sym, r in target.rows() if (ex, sym, r[0]) == ("binance_futures", "BTCUSDT", last)
    ]
    assert kept == [(last, "100.0", "101.25", "0.00000001", "7.77", "12413747.23840", "0.0", 42, 3)]
    code, out, _ = migrate("--from", f"sqlite:{source}", "--to", target.spec)
    assert code == 1
    assert f"DIFFERENT binance_futures BTCUSDT 1m: {N - len(HOLES)} rows" in out
    assert f"first difference at open time {last}" in out


def test_history_is_copied_under_newer_rows_of_a_live_collector(
    source: Path, target: Store
) -> None:
    """Resumption is not taken from the target's newest candle: a collector already writing
    the target holds newer ones, and the history below them must still be copied."""
    target.write([candle(T0 + (N + 100) * M)])
    code, out, err = migrate("--from", f"sqlite:{source}", "--to", target.spec, "--json")
    assert code == 0, err
    assert summary(out)["rows_copied"] == len(source_candles())
    copied = [row for row in target.rows() if row[2][0] != T0 + (N + 100) * M]
    assert copied == stored(source)


def test_a_rerun_copies_only_what_the_source_gained(source: Path, target: Store) -> None:
    """The forming last candle is copied again (the source closed it meanwhile), with the
    candles that came after it; nothing else is copied again."""
    args = ("--from", f"sqlite:{source}", "--to", target.spec, "--json")
    assert migrate(*args)[0] == 0
    code, out, _ = migrate(*args)
    assert code == 0
    # Only the forming last candle of each of the four series is read and written again.
    assert summary(out)["rows_copied"] == 4
    sqlite_store(source).write(
        [candle(T0 + (N - 1) * M, close="9.99"), candle(T0 + N * M, closed=False)]
    )
    code, out, _ = migrate(*args)
    assert code == 0
    assert summary(out)["rows_copied"] == 4 + 1
    assert target.rows() == stored(source)
    rows = {r[0]: r for ex, sym, r in target.rows() if (ex, sym) == ("binance_futures", "BTCUSDT")}
    assert rows[T0 + (N - 1) * M][4] == "9.99" and rows[T0 + (N - 1) * M][8] & 1
    assert not rows[T0 + N * M][8] & 1


def test_an_empty_source_copies_nothing(tmp_path: Path) -> None:
    source = tmp_path / "empty.db"
    make_store(source, [], jobs=0)
    code, out, err = migrate(
        "--from", f"sqlite:{source}", "--to", f"sqlite:{tmp_path / 't.db'}", "--json"
    )
    assert code == 0, err
    assert summary(out)["rows_copied"] == 0 and summary(out)["ok"] is True


def test_an_unreachable_server_is_one_line_without_the_password(
    source: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    wrong = pg_dsn.replace(pg_server.password, "Not-The-Pw-4242")
    code, out, err = migrate("--from", f"sqlite:{source}", "--to", wrong)
    assert (code, out) == (1, "")
    assert err.strip().count("\n") == 0 and err.strip().startswith("feedd migrate: error: ")
    assert "Not-The-Pw-4242" not in err and pg_server.password not in err
    assert "***" in err


# --- interruption --------------------------------------------------------------------------


def big_source(path: Path, per_series: int = 10_000) -> int:
    db = Database.open(path)
    try:
        for symbol in ("AUSDT", "BUSDT", "CUSDT", "DUSDT"):
            db.write([candle(T0 + i * M, symbol=symbol, close=f"{i}.5") for i in range(per_series)])
    finally:
        db.close()
    return 4 * per_series


def start_migrate(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "feedd", "migrate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_rows(proc: subprocess.Popen[bytes], target: Store, at_least: int) -> int:
    """Poll the target (another process writes it) until it holds ``at_least`` candles."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = target.count()
        if rows >= at_least:
            return rows
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"the migration did not reach {at_least} rows in 60 s")


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_resumes_after_ctrl_c_and_sigkill(
    tmp_path: Path, target: Store, reap: list[subprocess.Popen[bytes]]
) -> None:
    source = tmp_path / "source.db"
    total = big_source(source)
    args = ("--from", f"sqlite:{source}", "--to", target.spec, "--batch", "300", "--json")
    # Ctrl-C: an orderly stop, a one-line hint, exit 130.
    proc = start_migrate(*args)
    reap.append(proc)
    wait_for_rows(proc, target, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (
        err.decode()
        .rstrip()
        .endswith("feedd migrate: interrupted; run the same command again to continue")
    )
    after_int = target.count()
    assert 0 < after_int < total
    # SIGKILL mid-run, once the second run has copied more than the first.
    proc = start_migrate(*args)
    reap.append(proc)
    wait_for_rows(proc, target, after_int + 1200)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    after_kill = target.count()
    assert after_int < after_kill < total
    # The third run copies the rest only and verifies the whole.
    proc = start_migrate(*args)
    reap.append(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = summary(out.decode())
    assert doc["ok"] is True and doc["rows_total"] == total
    # What the earlier runs committed is not copied again (a batch may be, at most one per
    # run: the one in flight when the process died was rolled back).
    assert doc["rows_copied"] <= total - after_kill + 300, (doc, after_kill)
    assert target.rows() == stored(source)


# --- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--from: missing: give sqlite:PATH or postgresql://"),
        (("--from", "mysql://x"), "--from: expected sqlite:PATH or postgresql://"),
        (("--from", "sqlite:"), "--from: sqlite: needs a file"),
        (("--from", "sqlite:{tmp}/nope.db"), "--from: no SQLite store at {tmp}/nope.db"),
        (("--from", "sqlite:{tmp}/junk.db"), "--from: {tmp}/junk.db is not a readable SQLite"),
        (("--from", "sqlite:{tmp}/other.db"), "--from: {tmp}/other.db is not a feedd store"),
        (("--from", "sqlite:{source}"), "--to: missing: give sqlite:PATH or postgresql://"),
        (("--from", "sqlite:{source}", "--to", "sqlite:{source}"), "--to: is the store --from"),
        (
            ("--from", "sqlite:{source}", "--to", "postgresql://u:S3cret@host:port/db"),
            "--to: malformed URL",
        ),
        (("--from", "sqlite:{source}", "--to", "sqlite:{tmp}/t.db", "--batch", "0"), "--batch"),
    ],
)
def test_bad_arguments_are_one_line_and_change_nothing(
    source: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database at all, not at all" * 100)
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE x (y)")
    other.close()
    before = files(tmp_path)
    fill = {"tmp": str(tmp_path), "source": str(source)}
    stored_before = stored(source)
    code, out, err = migrate(*(a.format(**fill) for a in args), env={})
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("feedd migrate: error: "), err
    assert message.format(**fill) in err
    assert "S3cret" not in err
    assert files(tmp_path) == before  # no target made
    assert stored(source) == stored_before


def files(folder: Path) -> list[str]:
    # A read of a WAL database may leave its -wal and -shm files: the database is unchanged.
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("source.db-"))


def test_to_defaults_to_the_environment(source: Path, tmp_path: Path) -> None:
    code, _, err = migrate(
        "--from", f"sqlite:{source}", env={"FEEDD_DATABASE_URL": "postgresql://u:S3cret@h:x/d"}
    )
    assert (code, "S3cret" in err) == (2, False)
    assert "--to: malformed URL" in err


def test_help_names_the_stores_and_exit_statuses() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "feedd", "migrate", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "sqlite:PATH" in done.stdout and "FEEDD_DATABASE_URL" in done.stdout
    assert "130 interrupted" in done.stdout
    assert "migrate" in cli.build_parser().format_help()
