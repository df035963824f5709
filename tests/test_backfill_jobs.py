"""Backfill jobs end to end: feedd against the simulator, the store compared with its truth."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pyarrow as pa
import pytest
import trio
import trio.testing
from e2e import stored_closed

from feedd import config, control, exchanges
from feedd.engine.pacing import Pacer
from feedd.intervals import MINUTE_MS, floor_open
from feedd.jobs.manager import JobManager
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.export import decimal_text

DAY_MS = 86_400_000
JSON = {"Content-Type": "application/json"}


def exchanges_doc(sim: Simulator, live: dict[str, list[str]], **more: dict[str, Any]) -> dict:
    """Every venue of ``sim`` pointed at it (its archive too, where it has one); venues not in
    ``live`` are disabled."""
    out: dict[str, Any] = {}
    for name, venue in sim.venues.items():
        out[name] = {
            "symbols": live.get(name, []),
            "enabled": name in live,
            "ws_url": venue.ws_url,
            "rest_url": venue.rest_url,
            "silence_timeout": 3,
        }
        if getattr(venue, "archive_url", None):
            out[name]["archive_url"] = venue.archive_url  # type: ignore[attr-defined]
        out[name].update(more.get(name, {}))
    return out


@asynccontextmanager
async def feedd_with_jobs(
    tmp_path: Path,
    sim: Simulator,
    live: dict[str, list[str]],
    **extra: Any,
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    doc: dict[str, Any] = {
        "exchanges": exchanges_doc(sim, live),
        "intervals": ["1m"],
        "bootstrap_load": 20,
        "batch_interval": 50,
        "port": 0,
        "max_records": 0,
    }
    doc.update(extra)
    cfg = config.parse(doc).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db")
        )
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


def manager(service: Service) -> JobManager:
    assert service.state.jobs is not None
    return service.state.jobs


async def start_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/backfill", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def finished(service: Service, job_id: str, seconds: float = 55) -> dict[str, Any]:
    jobs = manager(service)
    with trio.fail_after(seconds):
        await jobs.wait_for(lambda: jobs.jobs[job_id].state not in ("queued", "running"))
        await jobs.jobs[job_id].ended.wait()
    return jobs.jobs[job_id].document()


#: nothing listens on the discard port: an archive there is unreachable, and jobs use REST
CLOSED_PORT = "http://127.0.0.1:9"


def no_archive(sim: Simulator) -> dict[str, Any]:
    """Binance's archive unreachable: the job goes over REST."""
    return {"binance_futures": {"archive_url": CLOSED_PORT}}


def differences(
    sim: Simulator, db: Path, exchange: str, symbol: str, start: int, end: int
) -> list[str]:
    """The first few candles where the store and the simulator's truth disagree in
    [start, end]; a year is compared in seconds (the stored side is read and decoded column-wise
    with Arrow's kernels)."""
    truth = []
    page_start = start
    while page_start <= end:
        # The simulator answers at most TRUTH_MAX_ROWS at a time: ask a week at a time.
        page_end = min(end, page_start + 7 * DAY_MS - MINUTE_MS)
        truth += [
            (t.open_time, t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades)
            for t in sim.truth(exchange, symbol, "1m", page_start, page_end)
        ]
        page_start = page_end + MINUTE_MS
    stored = stored_rows(db, exchange, symbol, start, end)
    if stored == truth:
        return []
    by_time = {row[0]: row for row in truth}
    have = {row[0]: row for row in stored}
    out = [f"{t} missing" for t in sorted(set(by_time) - set(have))][:5]
    out += [f"{t} not in truth" for t in sorted(set(have) - set(by_time))][:5]
    out += [f"{t} differs" for t in sorted(set(by_time) & set(have)) if by_time[t] != have[t]][:5]
    return out


def stored_rows(db: Path, exchange: str, symbol: str, start: int, end: int) -> list[tuple]:
    """Closed 1m candles stored in [start, end] as (open time, the six values as their exact
    decimal text, trades), oldest first."""
    # sqlite3, never a second SQLite library (ADBC's): feedd runs in this process, and two
    # SQLite copies in one process break each other's locks.
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,"
            " c.trades FROM candles c JOIN series s ON s.id = c.series"
            " WHERE s.exchange = ? AND s.symbol = ? AND s.interval = '1m' AND c.flags & 1"
            " AND c.open_time BETWEEN ? AND ? ORDER BY c.open_time",
            (exchange, symbol, start, end),
        ).fetchall()
    finally:
        conn.close()
    if not found:
        return []
    columns = [pa.array(column, pa.int64()) for column in zip(*found, strict=True)]
    texts = [decimal_text(column).to_pylist() for column in columns[1:7]]
    return list(zip(columns[0].to_pylist(), *texts, columns[7].to_pylist(), strict=True))


def raise_budget(monkeypatch: pytest.MonkeyPatch, name: str, factor: float) -> None:
    """The simulator's clock runs 60x: its limits are per sim minute, i.e. 60x the venue's
    per real minute. Tests that fetch months raise feedd's budget toward that."""
    module = exchanges.get(name)
    limits = attrs.evolve(
        module.LIMITS, rest_weight_per_minute=int(module.LIMITS.rest_weight_per_minute * factor)
    )
    monkeypatch.setattr(module, "LIMITS", limits)


@pytest.mark.parametrize(
    ("exchange", "days", "factor"),
    [("bybit_futures", 31, 1.0), ("okx_futures", 31, 12.0)],
)
async def test_a_month_of_1m_equals_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: str, days: int, factor: float
) -> None:
    raise_budget(monkeypatch, exchange, factor)
    settings = SimSettings(venues=(exchange,), history_days=days + 2)
    # Live ingest of the venue disabled (no symbols live): a job runs all the same.
    async with (
        open_simulator(settings) as sim,
        feedd_with_jobs(tmp_path, sim, {}) as (
            service,
            client,
        ),
    ):
        now = sim.now_ms()
        since = floor_open("1m", now) - days * DAY_MS
        # The simulator's clock is not the wall clock: until is its now.
        job = await start_job(
            client,
            exchange=exchange,
            symbols=["BTCUSDT"],
            interval="1m",
            since=since,
            until=now,
        )
        assert job["state"] in ("queued", "running")
        assert job["rows_expected"] >= days * 1440
        done = await finished(service, job["id"])
        assert done["state"] == "done", done
        assert done["rows_done"] == done["rows_expected"]
        assert done["per_symbol"][0]["state"] == "done"
        assert done["sources"]["rest"] == done["rows_done"]
        assert done["finished_at"] is not None and done["eta_s"] == 0
        end = floor_open("1m", job["until"]) - MINUTE_MS
        assert differences(sim, tmp_path / "ohlcv.db", exchange, "BTCUSDT", since, end) == []
        listed = (await client.get("/backfill")).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]


#: a year of 1m (525,601 candles): twelve monthly archives, daily ones, and today over REST
DAYS = 365


async def test_a_year_of_binance_from_archives_and_rest_equals_the_truth(tmp_path: Path) -> None:
    settings = SimSettings(venues=("binance_futures",), history_days=DAYS + 5)
    async with open_simulator(settings) as sim:
        venue = sim.venues["binance_futures"]
        archive = {"binance_futures": {"archive_url": venue.archive_url}}  # type: ignore[attr-defined]
        doc = exchanges_doc(sim, {}, **archive)
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            now = sim.now_ms()
            since = floor_open("1m", now) - DAYS * DAY_MS
            job = await start_job(
                client,
                exchange="binance_futures",
                symbols=["BTCUSDT"],
                interval="1m",
                since=since,
                until=now,
            )
            # ~25 s of CPU: a bound for a machine shared by others
            done = await finished(service, job["id"], seconds=600)
            assert done["state"] == "done", done
            # until is the candle opening at ``now``, wanted if the venue closed it by then.
            assert done["rows_done"] == done["rows_expected"]
            assert done["rows_expected"] in (DAYS * 1440, DAYS * 1440 + 1)
            # Whole days from the archive; today's part (after the last daily file) over REST.
            assert done["sources"]["archive"] > (DAYS - 1) * 1440
            assert 0 < done["sources"]["rest"] <= 1440
            db = tmp_path / "ohlcv.db"
            end = since + (done["rows_expected"] - 1) * MINUTE_MS
            diff = differences(sim, db, "binance_futures", "BTCUSDT", since, end)
            assert diff == []


async def test_background_work_yields_to_urgent_work(autojump_clock: trio.abc.Clock) -> None:
    pacer = Pacer(rate=10.0, burst=20.0)  # reserve: 5 units
    order: list[str] = []

    async def take(name: str, units: float, background: bool) -> None:
        if background:
            await pacer.acquire_background(units)
        else:
            await pacer.acquire(units)
        order.append(name)

    async with trio.open_nursery() as nursery:
        # The background waiter leaves the reserve: 15 of 20 units, then it waits.
        await take("job-1", 15, True)
        nursery.start_soon(take, "job-2", 10, True)
        await trio.testing.wait_all_tasks_blocked()
        # An urgent request finds the reserve ready at once.
        start = trio.current_time()
        await take("heal-1", 5, False)
        assert trio.current_time() == start
        # Urgent requests queued while the job waits pass before it.
        nursery.start_soon(take, "heal-2", 10, False)
        nursery.start_soon(take, "heal-3", 10, False)
    # (trio starts tasks in no set order: heal-2 and heal-3 either way round)
    assert order[:2] == ["job-1", "heal-1"] and order[-1] == "job-2"
    assert sorted(order[2:4]) == ["heal-2", "heal-3"]


async def test_validation_errors_change_nothing(tmp_path: Path) -> None:
    settings = SimSettings(
        venues=("bybit_futures",), history_days=3, unlisted=frozenset({"NOPEUSDT"})
    )
    async with (
        open_simulator(settings) as sim,
        feedd_with_jobs(tmp_path, sim, {}, max_records=1000) as (_service, client),
    ):
        now = sim.now_ms()
        good = {"exchange": "bybit_futures", "symbols": ["BTCUSDT"], "interval": "1m",
                "since": now - 600_000, "until": now}  # fmt: skip

        async def refused(change: dict[str, Any], status: int, field: str | None) -> str:
            response = await client.post("/backfill", json={**good, **change})
            assert response.status_code == status, response.text
            assert response.json().get("field") == field
            return str(response.json()["error"])

        await refused({"exchange": "nope_futures"}, 404, "exchange")
        await refused({"symbols": ["btc-usdt"]}, 400, "symbols[0]")
        await refused({"symbols": []}, 400, "symbols")
        await refused({"interval": "7m"}, 400, "interval")
        await refused({"since": now, "until": now - 60_000}, 400, "since")
        await refused({"since": "yesterday"}, 400, "since")
        await refused({"symbols": ["BTCUSDT", "NOPEUSDT"]}, 400, "symbols[1]")
        message = await refused({"since": now - 2 * DAY_MS}, 400, "since")
        assert "max_records" in message
        response = await client.post(
            "/backfill", content=b"exchange=bybit_futures", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 415
        assert (await client.get("/backfill")).json() == {"jobs": []}
        assert (await client.get("/backfill/abc")).status_code == 404
        assert (await client.delete("/backfill/abc", headers=JSON)).status_code == 404
        # The same body within retention is taken.
        job = await start_job(client, **good)
        # The candle opening at until is wanted if the venue's clock closed it by then.
        assert job["rows_expected"] in (9, 10) and job["until"] == now


async def test_cancel_then_forget(tmp_path: Path) -> None:
    settings = SimSettings(venues=("binance_futures",), history_days=12)
    async with open_simulator(settings) as sim:
        doc = exchanges_doc(sim, {}, **no_archive(sim))
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            await cancel_then_forget(sim, service, client)


async def cancel_then_forget(sim: Simulator, service: Service, client: httpx.AsyncClient) -> None:
    now = sim.now_ms()
    job = await start_job(client, exchange="binance_futures", symbols=["BTCUSDT", "ETHUSDT"],
                          interval="1m", since=now - 10 * DAY_MS, until=now)  # fmt: skip
    jobs = manager(service)
    with trio.fail_after(30):
        await jobs.wait_for(lambda: sum(jobs.rows.values()) > 0)
    status = (await client.get("/status")).json()
    binance = next(e for e in status["exchanges"] if e["name"] == "binance_futures")
    assert [j["id"] for j in binance["backfill_jobs"]] == [job["id"]]
    metrics = (await client.get("/metrics")).text
    assert 'feedd_backfill_rows_total{exchange="binance_futures",source="rest"}' in metrics
    response = await client.delete(f"/backfill/{job['id']}", headers=JSON)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled" and response.json()["removed"] is False
    done = await finished(service, job["id"])
    assert done["state"] == "cancelled"
    assert {s["state"] for s in done["per_symbol"]} == {"cancelled"}
    assert 0 < done["rows_done"] < done["rows_expected"]
    saved = [orjson.loads(raw) for raw in await service.state.writer.load_jobs()]
    assert [s["state"] for s in saved] == ["cancelled"]
    # A finished job: DELETE forgets it.
    response = await client.delete(f"/backfill/{job['id']}", headers=JSON)
    assert response.json()["removed"] is True
    assert (await client.get(f"/backfill/{job['id']}")).status_code == 404
    assert await service.state.writer.load_jobs() == []


async def test_heals_go_first_and_nothing_is_rate_limited(tmp_path: Path) -> None:
    # speed 1: the simulator's weight window is a real minute of 2,400, as on Binance.
    settings = SimSettings(venues=("binance_futures",), history_days=42, speed=1.0)
    live = {"binance_futures": ["BTCUSDT", "ETHUSDT", "SOLUSDT"]}
    async with (
        open_simulator(settings) as sim,
        feedd_with_jobs(tmp_path, sim, live, bootstrap_load=3000) as (service, client),
    ):
        now = sim.now_ms()
        # 40 days: 39 pages of weight 10, ~15 s at half of 2,400 weight a minute.
        job = await start_job(client, exchange="binance_futures", symbols=["XRPUSDT"],
                              interval="1m", since=now - 40 * DAY_MS,
                              until=now - MINUTE_MS)  # fmt: skip
        jobs = manager(service)
        stats = service.state.supervisor.stats["binance_futures"]

        def healed() -> bool:
            return stats.backfill_pending == 0 and not stats.backfilling and stats.rest_candles > 0

        with trio.fail_after(50):
            await jobs.wait_for(healed)
        # Every bootstrap (3 x 3,000 candles) was fetched before the job finished. (It may
        # not have started yet: it first takes its lease, through the writer.)
        assert jobs.jobs[job["id"]].state in ("queued", "running")
        assert stats.rest_candles >= 3 * 3000
        done = await finished(service, job["id"])
        assert done["state"] == "done"
        assert sim.venues["binance_futures"].stats["rest_throttled"] == 0
        assert stats.rest_rate_limited == 0
        # The venue's budget (and any pause in it) outlives a restart of its ingest.
        supervisor = service.state.supervisor
        budget = supervisor.budget("binance_futures")
        assert (await client.post("/restart", json={})).status_code == 200
        assert supervisor.stats["binance_futures"] is not stats
        assert supervisor.budget("binance_futures") is budget


async def test_sigkill_mid_job_resumes_without_fetching_again(tmp_path: Path) -> None:
    from chaos.harness import FeeddProcess, config_doc, poll_until, write_config

    settings = SimSettings(venues=("binance_futures",), history_days=27)
    async with open_simulator(settings) as sim:
        doc = config_doc(sim, {"binance_futures": []}, max_records=0)
        doc["exchanges"]["binance_futures"].update(enabled=False, archive_url=CLOSED_PORT)
        config_path = write_config(tmp_path / "config.json", doc)
        feedd = FeeddProcess(config_path, tmp_path / "feedd.log")
        venue = sim.venues["binance_futures"]
        now = sim.now_ms()
        since = floor_open("1m", now) - 25 * DAY_MS
        end = floor_open("1m", now) - MINUTE_MS
        try:
            await feedd.start()
            async with httpx.AsyncClient(base_url=feedd.url, timeout=10) as client:
                job = await start_job(client, exchange="binance_futures", symbols=["BTCUSDT"],
                                      interval="1m", since=since, until=end)  # fmt: skip
                expected = job["rows_expected"]
                assert expected == 25 * 1440

                async def halfway() -> bool:
                    got = (await client.get(f"/backfill/{job['id']}")).json()
                    return bool(got["rows_done"] > expected // 2)

                await poll_until(halfway, 40, "the job to pass half")
            await feedd.kill()
            stored = len(stored_closed(tmp_path / "ohlcv.db", "binance_futures", "BTCUSDT", "1m"))
            assert expected // 3 < stored < expected, "killed too late to show a resume"
            before = venue.stats["rest_requests"]
            await feedd.start()
            async with httpx.AsyncClient(base_url=feedd.url, timeout=10) as client:

                async def done() -> bool:
                    got = (await client.get(f"/backfill/{job['id']}")).json()
                    assert got["state"] in ("queued", "running", "done"), got
                    return bool(got["state"] == "done")

                await poll_until(done, 40, "the resumed job to finish")
                final = (await client.get(f"/backfill/{job['id']}")).json()
            assert final["rows_done"] == final["rows_expected"] == expected
            # Pages of 1,500 for what was missing, plus a server-time request or two.
            missing_pages = -(-(expected - stored) // 1500)
            assert venue.stats["rest_requests"] - before <= missing_pages + 3
            assert (
                differences(sim, tmp_path / "ohlcv.db", "binance_futures", "BTCUSDT", since, end)
                == []
            )
            assert "Traceback" not in feedd.log_text()
        finally:
            await feedd.aclose()


def test_max_records_zero_keeps_everything(tmp_path: Path) -> None:
    from feedd.candle import Candle, Source
    from feedd.store.database import Database

    assert config.parse({"max_records": 0}).config.max_records == 0
    db = Database.open(tmp_path / "ohlcv.db")
    try:
        t0 = floor_open("1m", 1_700_000_000_000)
        candles = [
            Candle(
                "bybit_futures",
                "BTCUSDT",
                "1m",
                t0 + i * MINUTE_MS,
                "1",
                "2",
                "0.5",
                "1.5",
                "10",
                "15",
                3,
                True,
                Source.REST,
            )
            for i in range(50)
        ]
        db.write(candles)
        assert db.prune(0) == 0
        assert len(stored_closed(tmp_path / "ohlcv.db", "bybit_futures", "BTCUSDT", "1m")) == 50
        db.write(candles[:1])
        assert db.prune(10) == 40
    finally:
        db.close()


async def test_delete_database_cancels_and_forgets_every_job(tmp_path: Path) -> None:
    """A wiped database keeps no job: the running one is cancelled (it would refill what was
    emptied), finished ones are forgotten, and the jobs table is empty, also after a restart."""
    settings = SimSettings(venues=("binance_futures",), history_days=12)
    async with open_simulator(settings) as sim:
        doc = exchanges_doc(sim, {}, **no_archive(sim))
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            now = sim.now_ms()
            small = await start_job(client, exchange="binance_futures", symbols=["ETHUSDT"],
                                    interval="1m", since=now - 3_600_000, until=now)  # fmt: skip
            assert (await finished(service, small["id"]))["state"] == "done"
            big = await start_job(client, exchange="binance_futures", symbols=["BTCUSDT"],
                                  interval="1m", since=now - 10 * DAY_MS, until=now)  # fmt: skip
            jobs = manager(service)
            with trio.fail_after(30):
                await jobs.wait_for(lambda: jobs.jobs[big["id"]].document()["rows_done"] > 0)
            running = jobs.jobs[big["id"]]
            wiped = await client.post("/deleteDatabase", json={"confirm": "DELETE"})
            assert wiped.status_code == 200, wiped.text
            assert running.ended.is_set() and running.state == "cancelled"
            assert (await client.get("/backfill")).json() == {"jobs": []}
            assert (await client.get(f"/backfill/{big['id']}")).status_code == 404
            conn = sqlite3.connect(tmp_path / "ohlcv.db")
            try:
                assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
                assert conn.execute("SELECT count(*) FROM candles").fetchone() == (0,)
            finally:
                conn.close()
        # Nothing comes back to life at the next start.
        async with feedd_with_jobs(tmp_path, sim, {}, exchanges=doc) as (service, client):
            await manager(service).wait_for(lambda: True)
            assert (await client.get("/backfill")).json() == {"jobs": []}


async def test_a_job_without_until_runs_to_the_venue_clock(tmp_path: Path) -> None:
    """POST /backfill takes "now" from the venue, as the runner and the heals do: a venue
    whose clock is a year behind ours (the simulator's) gets a job up to its own now, which
    retention does not refuse and which finishes."""
    year_ago = floor_open("1m", int(time.time() * 1000)) - 365 * DAY_MS
    settings = SimSettings(venues=("bybit_futures",), history_days=3, start_ms=year_ago)
    async with (
        open_simulator(settings) as sim,
        feedd_with_jobs(tmp_path, sim, {}, max_records=100_000) as (service, client),
    ):
        now = sim.now_ms()
        job = await start_job(client, exchange="bybit_futures", symbols=["BTCUSDT"],
                              interval="1m", since=now - 2 * DAY_MS)  # fmt: skip
        assert now <= job["until"] <= sim.now_ms()
        assert job["rows_expected"] <= 2 * 1440 + 60
        done = await finished(service, job["id"])
        assert done["state"] == "done", done
        assert done["rows_done"] == done["rows_expected"]


async def test_an_instrument_list_waits_for_the_venue_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrument list (POST /exchangeSymbols, POST /backfill's check) draws from the
    venue's one REST budget: while the venue has asked us to pause (a 429's Retry-After),
    it is not asked for its list either."""
    monkeypatch.setattr(control, "LISTING_TIMEOUT_S", 1.0)
    async with (
        open_simulator(SimSettings(venues=("okx_futures",))) as sim,
        feedd_with_jobs(tmp_path, sim, {}) as (service, client),
    ):
        served = sim.venues["okx_futures"].stats["rest_requests"]
        service.state.supervisor.budget("okx_futures").pause_until(trio.current_time() + 60)
        paused = await client.get("/exchangeSymbols/okx_futures")
        assert paused.status_code == 503, paused.text
        assert "instrument list" in paused.json()["error"]
        assert sim.venues["okx_futures"].stats["rest_requests"] == served
