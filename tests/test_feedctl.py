"""feedctl against a live feedd fed by the simulator, plus its usage and connection errors.

The CLI is synchronous, so each call runs ``main`` in a worker thread while the service and
the simulator keep running in the test's trio loop.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import e2e
import pytest
import trio

from feedd import __version__
from feedd.ctl import text
from feedd.feedctl import main
from feedd.intervals import MINUTE_MS
from feedd.service import Service
from feedd.sim.app import Simulator

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@attrs.frozen
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own FEEDD_URL / FEEDD_TOKEN must not leak into the tests."""
    monkeypatch.delenv("FEEDD_URL", raising=False)
    monkeypatch.delenv("FEEDD_TOKEN", raising=False)


async def feedctl(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    def call() -> int:
        try:
            return main(list(argv))
        except SystemExit as exc:  # argparse: usage errors and --help
            return exc.code if isinstance(exc.code, int) else 1

    # Abandoned on cancel, so that a test's fail_after ends a feedctl that hangs.
    code = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def running_feedd(
    tmp_path: Path, venues: tuple[str, ...] = (EX,), **extra: Any
) -> AsyncIterator[tuple[Simulator, Service]]:
    """The simulator and feedd on port 0, run from a config file that API changes rewrite."""
    symbols = {name: SYMBOLS for name in venues}
    async with e2e.running_feedd(tmp_path, symbols, **extra) as (sim, service, _client):
        yield sim, service


async def wait_stored(service: Service, symbol: str, first: int, last: int) -> None:
    """Wait, on commits, until every closed 1m candle opening in [first, last] is stored."""
    wanted = (last - first) // MINUTE_MS + 1
    reader = service.state.reader
    with service.state.writer.open_commit_listener() as commits:
        while len(await reader.closed_open_times(EX, symbol, "1m", first, last)) < wanted:
            await commits.receive()


# --- usage and connection errors: no service needed ------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["ohlcv", EX, "BTCUSDT"],
        ["symbols"],
        ["symbols", "add", EX],
        ["enable"],
        ["config", "set"],
        ["ohlcv", EX, "BTCUSDT", "1m", "--since", "yesterday-ish"],
        ["ohlcv", EX, "BTCUSDT", "1m", "--limit", "0"],
        ["ohlcv", EX, "BTCUSDT", "1m", "--csv", "--json"],
        ["tail", "--count", "-1"],
        ["--url", "ftp://example.org", "status"],
        ["delete-db"],
    ],
)
async def test_usage_errors_exit_2_before_any_request(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # A closed port: had feedctl sent anything, it would exit 3, not 2.
    run = await feedctl(capsys, "--url", closed_port_url(), *argv)
    assert run.code == 2, run
    assert run.out == ""
    assert "error:" in run.err.splitlines()[-1]
    assert "Traceback" not in run.err


async def test_delete_db_without_yes_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    run = await feedctl(capsys, "--url", closed_port_url(), "delete-db")
    assert run.code == 2
    assert "without --yes" in run.err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["status"],
        ["exchanges"],
        ["symbols"],
        ["symbols", "list"],
        ["symbols", "add"],
        ["symbols", "remove"],
        ["enable"],
        ["disable"],
        ["restart"],
        ["delete-db"],
        ["ohlcv"],
        ["tail"],
        ["config"],
        ["config", "get"],
        ["config", "set"],
    ],
)
async def test_every_command_has_help(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    run = await feedctl(capsys, *command, "--help")
    assert run.code == 0
    assert run.out.startswith(f"usage: {' '.join(['feedctl', *command])}")
    assert "exit status: 0 ok, 1 the server refused" in run.out


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["ohlcv", EX, "BTCUSDT", "1m"],
        ["symbols", "add", EX, "SOLUSDT"],
        ["delete-db", "--yes"],
        ["tail", "--count", "1"],
    ],
)
async def test_closed_port_exits_3_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    url = closed_port_url()
    run = await feedctl(capsys, *argv, "--url", url)
    assert run.code == 3, run
    assert run.out == ""
    assert run.err.count("\n") == 1
    assert run.err.startswith("feedctl: cannot reach ")
    assert url.removeprefix("http://") in run.err


async def test_unknown_host_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid never resolves (RFC 6761), so this needs no network.
    run = await feedctl(capsys, "--url", "http://feedd.invalid:3000", "status")
    assert run.code == 3
    assert run.err.startswith("feedctl: cannot reach http://feedd.invalid:3000")


async def test_silent_server_times_out_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts and never answers: --timeout bounds the wait, exit 3."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def never_answer(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, never_answer, listeners)
        url = f"http://127.0.0.1:{port}"
        run = await feedctl(capsys, "--url", url, "--timeout", "0.2", "status")
        tail = await feedctl(capsys, "--url", url, "--timeout", "0.2", "tail")
        nursery.cancel_scope.cancel()
    assert (run.code, run.err) == (3, f"feedctl: no answer from {url} within 0.2 s (timed out)\n")
    assert tail.code == 3
    assert tail.err == f"feedctl: no WebSocket handshake from {url} (timed out)\n"


async def test_config_set_with_a_bad_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = closed_port_url()
    broken = tmp_path / "broken.json"
    broken.write_text('{"port": 3000,')
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    missing = await feedctl(capsys, "--url", url, "config", "set", str(tmp_path / "nope.json"))
    not_json = await feedctl(capsys, "--url", url, "config", "set", str(broken))
    not_object = await feedctl(capsys, "--url", url, "config", "set", str(listed))
    assert missing.code == not_json.code == not_object.code == 2
    assert "cannot read" in missing.err and "No such file" in missing.err
    assert f"{broken} is not valid JSON" in not_json.err
    assert "expected a JSON object" in not_object.err


# --- against a running feedd -------------------------------------------------------------


async def test_ohlcv_prints_the_stored_candles(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with running_feedd(tmp_path) as (sim, service):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        since, until = start - 3 * MINUTE_MS, start - MINUTE_MS
        with trio.fail_after(30):
            await wait_stored(service, "BTCUSDT", since, until)
        window = ["--since", str(since), "--until", str(until)]
        raw = await feedctl(
            capsys, "ohlcv", EX, "btcusdt", "1m", *window, "--json", "--url", service.url
        )
        # the same window as ISO 8601 times (UTC without an offset)
        iso = [
            "--since",
            dt.datetime.fromtimestamp(since / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M"),
            "--until",
            dt.datetime.fromtimestamp(until / 1000, dt.UTC).isoformat(),
        ]
        table = await feedctl(capsys, "--url", service.url, "ohlcv", EX, "BTCUSDT", "1m", *iso)
        as_csv = await feedctl(
            capsys, "--url", service.url, "ohlcv", EX, "BTCUSDT", "1m", *window, "--csv"
        )
        newest = await feedctl(
            capsys, "--url", service.url, "--json", "ohlcv", EX, "BTCUSDT", "1m", "--limit", "2"
        )
        truth = sim.truth(EX, "BTCUSDT", "1m", since, until)

    assert raw.code == table.code == as_csv.code == newest.code == 0
    candles = raw.json()
    assert [c["open_time"] for c in candles] == [since, since + MINUTE_MS, until]
    for got, want in zip(candles, truth, strict=True):
        assert (got["open"], got["high"], got["low"], got["close"]) == (
            float(want.open),
            float(want.high),
            float(want.low),
            float(want.close),
        )
        assert got["closed"] is True

    lines = table.out.splitlines()
    assert lines[0].split()[:5] == ["OPEN", "TIME", "(UTC)", "OPEN", "HIGH"]
    assert len(lines) == 4
    # Numbers are right-aligned under their header: each close ends where "CLOSE" ends.
    close_end = lines[0].index("CLOSE") + len("CLOSE")
    for line, want in zip(lines[1:], truth, strict=True):
        assert line[:close_end].endswith(" " + text.number(float(want.close))), line

    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [int(r["open_time"]) for r in rows] == [since, since + MINUTE_MS, until]
    assert [float(r["close"]) for r in rows] == [float(t.close) for t in truth]
    assert [r["closed"] for r in rows] == ["true"] * 3
    assert len(newest.json()) == 2 and newest.json()[-1]["open_time"] >= until


async def test_read_only_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async with running_feedd(tmp_path) as (sim, service):
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(30):
            # a live candle: the exchange is connected and its series have a last price
            await wait_stored(service, "BTCUSDT", start, start)
        url = ["--url", service.url]
        status = await feedctl(capsys, *url, "status")
        status_json = await feedctl(capsys, *url, "status", "--json")
        exchanges = await feedctl(capsys, *url, "exchanges")
        exchanges_json = await feedctl(capsys, *url, "--json", "exchanges")
        listing = await feedctl(capsys, *url, "symbols", "list", EX)
        listing_all = await feedctl(capsys, *url, "symbols", "list", EX, "--all")
        listing_json = await feedctl(capsys, *url, "symbols", "list", EX, "--json")
        cfg = await feedctl(capsys, *url, "config", "get")
        cfg_json = await feedctl(capsys, *url, "config", "get", "--json")
    runs = [status, status_json, exchanges, exchanges_json, listing, listing_all]
    runs += [listing_json, cfg, cfg_json]
    assert [(r.code, r.err) for r in runs] == [(0, "")] * len(runs)

    doc = status_json.json()
    assert doc["version"] == __version__
    assert EX in [e["name"] for e in doc["exchanges"]]
    lines = status.out.splitlines()
    assert lines[0].startswith(f"feedd {__version__}  up ")
    assert lines[1].startswith("system   cpu ") and lines[3].startswith("writer   healthy")
    header = lines.index(next(line for line in lines if line.startswith("EXCHANGE ")))
    assert lines[header + 1].split()[:2] == [EX, "yes"]
    series = [line.split() for line in lines if line.startswith(EX + " ") and "1m" in line]
    assert sorted(row[1] for row in series) == SYMBOLS

    known = {e["name"]: e for e in exchanges_json.json()["exchanges"]}
    assert set(known) == {"binance_futures", "bybit_futures", "okx_futures"}
    assert known[EX]["enabled"] is True and known[EX]["symbols"] == SYMBOLS
    rows = {line.split()[0]: line.split() for line in exchanges.out.splitlines()[1:]}
    assert set(rows) == set(known)
    assert rows[EX][1] == "yes" and rows[EX][-2:] == SYMBOLS
    assert rows["okx_futures"][1] == "no"

    listed = listing_json.json()
    assert listed["configured"] == SYMBOLS and "SOLUSDT" in listed["listed"]
    assert listing.out.splitlines()[:3] == [
        "SYMBOL   LISTED",
        "BTCUSDT  yes",
        "ETHUSDT  yes",
    ]
    assert f"{len(listed['listed'])} symbols listed by {EX}" in listing.out
    assert "SOLUSDT" not in listing.out
    assert set(listing_all.out.split()) >= set(listed["listed"])

    # The human form is the same JSON, indented so that it can be edited and sent back.
    assert json.loads(cfg.out) == cfg_json.json()
    assert cfg.out.startswith("{\n  ")
    assert cfg_json.json()["exchanges"][EX]["symbols"] == SYMBOLS


async def test_control_commands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_feedd(tmp_path) as (sim, service):
        url = ["--url", service.url]
        # Bootstrap history (20 candles before start) is stored. A heal can still be in
        # flight then (a session's first candle asks for what is below it, and may look
        # before the bootstrap's commit), and it may land after a delete: stop the exchange
        # around the delete so that the old range is surely empty after it.
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        with trio.fail_after(30):
            await wait_stored(service, "BTCUSDT", start - 19 * MINUTE_MS, start - 2 * MINUTE_MS)
        old = ["ohlcv", EX, "BTCUSDT", "1m", "--until", str(start - 5 * MINUTE_MS), "--json"]
        before_delete = await feedctl(capsys, *url, *old)
        stopped = await feedctl(capsys, *url, "disable", EX)
        deleted = await feedctl(capsys, *url, "delete-db", "--yes")
        after_delete = await feedctl(capsys, *url, *old)
        resumed = await feedctl(capsys, *url, "enable", EX)

        async def configured() -> dict[str, Any]:
            run = await feedctl(capsys, *url, "exchanges", "--json")
            return {e["name"]: e for e in run.json()["exchanges"]}[EX]

        added = await feedctl(capsys, *url, "symbols", "add", EX, "solusdt", "XRPUSDT")
        after_add = await configured()
        removed = await feedctl(capsys, *url, "symbols", "remove", EX, "ETHUSDT", "--json")
        after_remove = await configured()
        disabled = await feedctl(capsys, *url, "disable", EX)
        after_disable = await configured()
        enabled = await feedctl(capsys, *url, "enable", EX, "--json")
        after_enable = await configured()
        restarted = await feedctl(capsys, *url, "restart")

        saved = json.loads(await trio.Path(tmp_path / "config.json").read_text())
        saved["bootstrap_load"] = 7
        edited = tmp_path / "edited.json"
        edited.write_text(json.dumps(saved))
        set_file = await feedctl(capsys, *url, "config", "set", str(edited))
        saved["exchanges"][EX]["symbols"] = ["BTCUSDT"]
        stdin = io.TextIOWrapper(io.BytesIO(json.dumps(saved).encode()))
        monkeypatch.setattr("sys.stdin", stdin)
        set_stdin = await feedctl(capsys, *url, "config", "set", "-", "--json")
        after_set = (await feedctl(capsys, *url, "config", "get", "--json")).json()

    assert before_delete.code == 0 and len(before_delete.json()) >= 14
    assert stopped.code == resumed.code == 0
    assert deleted == Run(0, "database deleted; ingest continues into a fresh one\n", "")
    assert after_delete == Run(0, "[]\n", "")
    assert added == Run(0, f"{EX} symbols: BTCUSDT ETHUSDT SOLUSDT XRPUSDT\nrestarted: {EX}\n", "")
    assert after_add["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert removed.code == 0
    assert removed.json()["symbols"] == after_remove["symbols"] == ["BTCUSDT", "SOLUSDT", "XRPUSDT"]
    assert disabled == Run(0, f"{EX} disabled; restarted: {EX}\n", "")
    assert after_disable["enabled"] is False
    assert enabled.code == 0 and enabled.json()["enabled"] is True
    assert after_enable["enabled"] is True
    assert restarted == Run(0, f"restarted: {EX}\n", "")
    assert set_file.code == 0
    assert set_file.out.startswith("configuration saved; ")
    assert set_stdin.code == 0 and set_stdin.json()["ok"] is True
    assert after_set["bootstrap_load"] == 7
    assert after_set["exchanges"][EX]["symbols"] == ["BTCUSDT"]


async def test_server_refusals_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async with running_feedd(tmp_path) as (_, service):
        url = ["--url", service.url]
        unknown = await feedctl(capsys, *url, "symbols", "add", "kraken_futures", "BTCUSDT")
        malformed = await feedctl(capsys, *url, "symbols", "add", EX, "BTCUSDT", "BTC-USD")
        unlisted = await feedctl(capsys, *url, "symbols", "add", EX, "NOSUCHCOINUSDT")
        toggled = await feedctl(capsys, *url, "disable", "kraken_futures")
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"exchanges": {}, "port": "three thousand"}))
        bad_config = await feedctl(capsys, *url, "config", "set", str(bad))
        tail = await feedctl(capsys, *url, "tail", "--interval", "7m", "--count", "1")
        exchange = await feedctl(capsys, *url, "ohlcv", "kraken_futures", "BTCUSDT", "1m")
        symbol = await feedctl(capsys, *url, "ohlcv", EX, "BTC-USDT", "1m")
        interval = await feedctl(capsys, *url, "ohlcv", EX, "BTCUSDT", "7m")
        after = await feedctl(capsys, *url, "config", "get", "--json")
    for run in (unknown, malformed, unlisted, toggled, bad_config, tail):
        assert run.code == 1, run
        assert run.out == ""
        assert run.err.startswith("feedctl: ") and run.err.count("\n") == 1, run
    assert unknown.err == (
        "feedctl: HTTP 404: unknown exchange 'kraken_futures' (field: exchange)\n"
    )
    assert malformed.err.startswith("feedctl: HTTP 400: ")
    assert malformed.err.endswith("(field: add[1])\n")
    assert unlisted.err.endswith("(field: add[0])\n") and "NOSUCHCOINUSDT" in unlisted.err
    assert toggled.err.startswith("feedctl: HTTP 404: unknown exchange 'kraken_futures'")
    assert bad_config.err.startswith("feedctl: HTTP 400: ")
    assert bad_config.err.endswith("(field: port)\n")
    assert tail.err == "feedctl: unknown interval '7m' (field: interval)\n"
    assert exchange == Run(
        1, "", "feedctl: HTTP 404: unknown exchange 'kraken_futures' (field: exchange)\n"
    )
    assert symbol.code == 1
    assert symbol.err.startswith("feedctl: HTTP 400: malformed symbol 'BTC-USDT'")
    assert symbol.err.endswith("(field: symbol)\n")
    assert interval == Run(1, "", "feedctl: HTTP 400: unknown interval '7m' (field: interval)\n")
    # nothing was saved by the refused changes
    assert after.json()["exchanges"][EX]["symbols"] == SYMBOLS
    assert after.json()["port"] == 0


async def test_tail_prints_live_candles(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    venues = (EX, "bybit_futures")
    async with running_feedd(tmp_path, venues) as (sim, service):
        url = ["--url", service.url]
        with trio.fail_after(30):
            table = await feedctl(capsys, *url, "tail", "--count", "3")
            closed = await feedctl(
                capsys, *url, "tail", "--json", "--closed", "--count", "2",
                "--exchange", "bybit_futures", "--symbol", "ethusdt", "--interval", "1m",
            )  # fmt: skip
        truth = {
            c["open_time"]: sim.truth(
                "bybit_futures", "ETHUSDT", "1m", c["open_time"], c["open_time"]
            )
            for c in map(json.loads, closed.out.splitlines())
        }
    assert table.code == 0 and table.err == ""
    lines = table.out.splitlines()
    assert lines[0].split()[:4] == ["OPEN", "TIME", "(UTC)", "EXCHANGE"]
    assert len(lines) == 4
    for line in lines[1:]:
        cells = line.split()
        assert cells[2] in venues and cells[3] in SYMBOLS and cells[4] == "1m"
    assert closed.code == 0 and closed.err == ""
    candles = [json.loads(line) for line in closed.out.splitlines()]
    assert len(candles) == 2
    for candle in candles:
        assert (candle["exchange"], candle["symbol"], candle["interval"]) == (
            "bybit_futures",
            "ETHUSDT",
            "1m",
        )
        assert candle["closed"] is True
        [want] = truth[candle["open_time"]]
        assert (candle["open"], candle["close"], candle["volume"]) == (
            float(want.open),
            float(want.close),
            float(want.volume),
        )


async def test_tail_ends_quietly_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C is how tail is meant to end: exit 0, nothing on stderr, no traceback."""
    script = Path(sys.executable).with_name("feedctl")
    async with running_feedd(tmp_path) as (_, service):
        command = [str(script), "--url", service.url, "tail"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "check": False}
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(functools.partial(trio.run_process, command, **pipes))
            assert proc.stdout is not None and proc.stderr is not None
            seen = b""
            with trio.fail_after(30):
                # a header and one candle: tail is connected and inside trio.run
                while seen.count(b"\n") < 2:
                    chunk = await proc.stdout.receive_some()
                    assert chunk, seen
                    seen += chunk
                proc.send_signal(signal.SIGINT)
                err = b""
                while chunk := await proc.stderr.receive_some():
                    err += chunk
                await proc.wait()
    assert (proc.returncode, err) == (0, b"")
    assert seen.startswith(b"OPEN TIME (UTC)")


async def test_api_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_feedd(tmp_path, api_token="s3cret") as (_, service):
        url = ["--url", service.url]
        missing = await feedctl(capsys, *url, "exchanges")
        wrong = await feedctl(capsys, *url, "--token", "guess", "exchanges")
        right = await feedctl(capsys, *url, "--token", "s3cret", "exchanges", "--json")
        tail_wrong = await feedctl(capsys, *url, "tail", "--token", "guess", "--count", "1")
        with trio.fail_after(30):
            tail_right = await feedctl(capsys, *url, "tail", "--token", "s3cret", "--count", "1")
        monkeypatch.setenv("FEEDD_TOKEN", "s3cret")
        monkeypatch.setenv("FEEDD_URL", service.url)
        from_env = await feedctl(capsys, "config", "get", "--json")
    hint = "; pass --token or set $FEEDD_TOKEN\n"
    assert missing.code == 1
    assert missing.err.startswith("feedctl: HTTP 401: ") and missing.err.endswith(hint)
    assert wrong.code == 1
    assert wrong.err.startswith("feedctl: HTTP 401: ") and wrong.err.endswith(hint)
    assert tail_wrong == Run(1, "", wrong.err)
    assert right.code == 0 and EX in {e["name"] for e in right.json()["exchanges"]}
    assert tail_right.code == 0 and len(tail_right.out.splitlines()) == 2
    assert from_env.code == 0 and from_env.json()["api_token"] == "***"


async def test_the_installed_script(tmp_path: Path) -> None:
    """The console script runs main and exits with its status (no service needed)."""
    script = Path(sys.executable).with_name("feedctl")
    done = await trio.run_process(
        [str(script), "--url", closed_port_url(), "status"], capture_stdout=True,
        capture_stderr=True, check=False,
    )  # fmt: skip
    usage = await trio.run_process(
        [str(script), "delete-db"], capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 3 and done.stderr.decode().startswith("feedctl: cannot reach ")
    assert usage.returncode == 2 and b"without --yes" in usage.stderr


@pytest.mark.parametrize(
    ("value", "want"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**30, "5.0 GiB"), (None, "-")],
)
def test_size(value: object, want: str) -> None:
    assert text.size(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [(0.25, "0.2s"), (42, "42s"), (192, "3m 12s"), (5 * 3600 + 120, "5h 02m"),
     (2 * 86400 + 3 * 3600, "2d 3h"), (None, "-")],
)  # fmt: skip
def test_age(value: object, want: str) -> None:
    assert text.age(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [(97000.5, "97000.5"), (1e-05, "0.00001"), (3, "3"), (None, "-"), (1.5e20, "15" + "0" * 19)],
)
def test_number_is_never_in_exponent_form(value: object, want: str) -> None:
    assert text.number(value) == want
