"""feedd under Prometheus' own tools: promtool checks a live /metrics and the shipped rules, a
real Prometheus scrapes feedd + simulator and fires the stale-series alert for a stalled venue
only, and the Grafana dashboard queries only metrics that exist.

The tools come from Debian's prometheus package (scripts/prometheus_setup.sh, run by `make
test`). Without them these tests fail under CI and are skipped elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e import feedd_config, running_feedd, wait_on_commits
from prometheus_client.parser import text_string_to_metric_families

from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
SAMPLE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "feedd.json"
ONE_EACH = {name: ["BTCUSDT"] for name in ("binance_futures", "bybit_futures", "okx_futures")}
#: sim minutes per real minute in the live alert test: the stale threshold of a 1m series
#: (2 x 60 s + 60 s of candle time) passes in 9 real seconds, a healthy series' usual age
#: (60-120 s) is 3-6 s, so a healthy venue would have to lag 3 s to look stale
SIM_SPEED = 20.0
#: every alert's ``for:`` in the live test (a scrape and an evaluation each second)
LIVE_FOR = "2s"
POLL_S = 0.2
#: Prometheus' own series a dashboard may query besides feedd's and the recorded rules
PROMETHEUS_SERIES = {"up"}


def tools_problem() -> str | None:
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found: these tests need Debian's prometheus package. "
        "Run `make test` (it calls scripts/prometheus_setup.sh) or `apt-get install -y prometheus`."
    )


@pytest.fixture
def tools() -> None:
    problem = tools_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


async def promtool(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    """Run promtool; its exit code and everything it printed."""
    done = await trio.run_process(
        ["promtool", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


async def live_metrics(tmp_path: Path) -> str:
    async with running_feedd(tmp_path, ONE_EACH) as (_sim, service, client):
        await wait_on_commits(service, lambda: len(service.state.hub.last_closed) == 3)
        return (await client.get("/metrics")).text


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record:\s*(\S+)", RULES.read_text(), re.MULTILINE))


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)", RULES.read_text(), re.MULTILINE)


# ---------------------------------------------------------------------------- promtool


async def test_promtool_accepts_a_live_metrics_page(tools: None, tmp_path: Path) -> None:
    text = await live_metrics(tmp_path)
    code, output = await promtool("check", "metrics", stdin=text.encode())
    # no errors and no lint warnings (promtool prints one line per problem)
    assert (code, output.strip()) == (0, "")


async def test_promtool_checks_and_unit_tests_the_rules(tools: None) -> None:
    code, output = await promtool("check", "rules", str(RULES))
    assert code == 0, output
    code, output = await promtool("check", "config", str(SAMPLE_CONFIG))
    assert code == 0, output
    code, output = await promtool("test", "rules", str(RULES_TESTS))
    assert code == 0, output


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    tests = RULES_TESTS.read_text()
    fired = set(re.findall(r"- alertname: (\w+)\n\s+eval_time: \S+\n\s+exp_alerts:\n\s+- ", tests))
    quiet = set(re.findall(r"- alertname: (\w+)\n\s+eval_time: \S+\n\s+exp_alerts: \[\]", tests))
    assert alert_names(), "no alerts found in alerts.yml"
    assert sorted(set(alert_names()) - fired) == []
    assert sorted(set(alert_names()) - quiet) == []


# ---------------------------------------------------------------------------- Grafana


def dashboard_panels() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = _GROUPING.sub("", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = re.findall(r"([A-Za-z_:][\w:]*)\s*(\(?)", expr)
    return {name for name, call in names if not call and name not in _KEYWORDS}


def test_dashboard_panels_have_a_title_a_datasource_and_the_exchange_variable() -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["exchange"]["multi"] and variables["exchange"]["includeAll"]
    panels = dashboard_panels()
    assert len(panels) >= 10
    for panel in panels:
        assert panel.get("title"), panel
        assert panel.get("datasource"), panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource"), panel["title"]
            # a per-exchange signal is filtered by the dashboard's exchange variable
            if "feedd_exchange_" in target["expr"] or "candle_timestamp" in target["expr"]:
                assert 'exchange=~"$exchange"' in target["expr"], panel["title"]


async def test_dashboard_queries_only_metrics_that_exist(tmp_path: Path) -> None:
    text = await live_metrics(tmp_path)
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    known = exposed | recorded_names() | PROMETHEUS_SERIES
    assert "feedd:interval_seconds" in known and "feedd_exchange_messages_total" in known
    unknown = {
        expr: sorted(metric_names(expr) - known)
        for expr in dashboard_queries()
        if metric_names(expr) - known
    }
    assert unknown == {}
    assert all(metric_names(expr) for expr in dashboard_queries())


def test_metric_names_finds_series_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{a=~"$exchange"}'
        "[$__rate_interval]))) / on (job) group_left () y or vector(1)"
    )
    assert metric_names(expr) == {"x_bucket", "y"}


# ---------------------------------------------------------------------------- live Prometheus


def free_port() -> int:
    """A port that was free a moment ago (Prometheus cannot bind port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stop_process(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def read_log(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_ready(process: trio.Process, url: str, log: Path) -> bool:
    """True once Prometheus answers /-/ready; False if it exited because its port was taken."""
    async with httpx.AsyncClient(timeout=2) as client:
        with trio.fail_after(60):
            while process.returncode is None:
                try:
                    if (await client.get(f"{url}/-/ready")).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                await trio.sleep(POLL_S)  # an external process: nothing to wait on but polls
    output = read_log(log)
    if "address already in use" in output:
        return False
    raise AssertionError(f"prometheus exited ({process.returncode}):\n{output[-3000:]}")


@asynccontextmanager
async def open_prometheus(workdir: Path, target: str, rules: str) -> AsyncIterator[str]:
    """Prometheus on loopback scraping ``target`` every second with ``rules``; yields its URL
    and always stops it."""
    (workdir / "rules.yml").write_text(rules)
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [{"job_name": "feedd", "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    for attempt in range(5):
        port = free_port()
        log = workdir / f"prometheus-{attempt}.log"
        with log.open("wb") as sink:
            process = await trio.lowlevel.open_process(
                [
                    "prometheus",
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / f'tsdb-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            if await wait_ready(process, url, log):
                yield url
                return
        finally:
            await stop_process(process)
    raise AssertionError("prometheus found no free port in 5 attempts")


def live_rules(sim: Simulator) -> str:
    """alerts.yml as shipped, but aged by the simulator's clock (it runs SIM_SPEED times faster
    than Prometheus' time()) and with short ``for:`` durations."""
    wall_at_start = time.time() - (trio.current_time() - sim.clock.t0)
    sim_now = (
        f"({sim.clock.start_ms / 1000:.3f} + (time() - {wall_at_start:.3f}) * {sim.clock.speed})"
    )
    text = RULES.read_text()
    age = "expr: time() - feedd_last_closed_candle_timestamp_seconds"
    assert text.count(age) == 1, "the age rule changed: update live_rules"
    text = text.replace(age, f"expr: {sim_now} - feedd_last_closed_candle_timestamp_seconds")
    text, durations = re.subn(r"^(\s+for:) \S+$", rf"\1 {LIVE_FOR}", text, flags=re.MULTILINE)
    assert durations == len(alert_names())
    return text


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = (await client.get("/api/v1/query", params={"query": expr})).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def poll(client: httpx.AsyncClient, expr: str, what: str, within: float = 60) -> None:
    """Poll Prometheus until ``expr`` returns something."""
    with trio.move_on_after(within):
        while not await query(client, expr):  # noqa: ASYNC110 - another process: only polls
            await trio.sleep(POLL_S)
        return
    raise AssertionError(f"timed out after {within:g} s waiting for {what} ({expr})")


async def firing(client: httpx.AsyncClient, alertname: str) -> list[dict[str, str]]:
    alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
    return [
        a["labels"]
        for a in alerts
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    ]


@asynccontextmanager
async def fast_feedd(tmp_path: Path) -> AsyncIterator[tuple[Simulator, Service]]:
    """Three venues on a simulator that starts at the wall clock and runs SIM_SPEED x."""
    settings = SimSettings(venues=tuple(ONE_EACH), speed=SIM_SPEED, start_ms=None)
    async with open_simulator(settings) as sim, trio.open_nursery() as nursery:
        cfg = feedd_config(sim, ONE_EACH)
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db")
        )
        try:
            yield sim, service
        finally:
            service.stop.set()


async def test_a_stalled_venue_fires_the_stale_alert_and_only_for_it(
    tools: None, tmp_path: Path
) -> None:
    stalled = "bybit_futures"
    async with fast_feedd(tmp_path) as (sim, service):
        await wait_on_commits(service, lambda: len(service.state.hub.last_closed) == 3)
        target = service.url.removeprefix("http://").rstrip("/")
        async with (
            open_prometheus(tmp_path, target, live_rules(sim)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            await poll(client, 'up{job="feedd"} == 1', "a successful scrape")
            await poll(
                client, "count(feedd:last_closed_candle_age_seconds) == 3", "three aged series"
            )
            # every dashboard query is valid PromQL against the live data
            for expr in dashboard_queries():
                await query(client, grafana_to_promql(expr))

            sim.venues[stalled].faults.stall()
            await poll(
                client,
                f'ALERTS{{alertname="FeeddSeriesStale",alertstate="firing",exchange="{stalled}"}}',
                f"the stale alert of {stalled}",
            )
            stale = await firing(client, "FeeddSeriesStale")
            assert [(a["exchange"], a["symbol"], a["interval"]) for a in stale] == [
                (stalled, "BTCUSDT", "1m")
            ]
            # Nothing else was ever pending or firing, except what the stall itself explains.
            others = await query(client, f'count_over_time(ALERTS{{exchange!="{stalled}"}}[10m])')
            assert others == [], others


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Grafana sends it with every variable at "All"."""
    return (
        expr.replace("$__rate_interval", "1m").replace("$exchange", ".*").replace("$instance", ".*")
    )
