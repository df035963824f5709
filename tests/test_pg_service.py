"""The whole service on PostgreSQL against the simulator: ingest, backfill, the API and the
health check run unchanged on the other backend, and the database equals the truth, also
after the server was stopped and started under it."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import psycopg
import trio
from e2e import feedd_config, truth_rows

from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.store.postgres import postgres_backend

if TYPE_CHECKING:
    from pgserver import PgServer

pytest_plugins = ["pgserver"]

EX = "binance_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def stored_closed(dsn: str, symbol: str) -> dict[int, tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT open_time, open, high, low, close, volume, quote_volume, trades"
            " FROM candles JOIN series ON series.id = candles.series"
            " WHERE exchange = %s AND symbol = %s AND (flags & 1) = 1",
            (EX, symbol),
        ).fetchall()
    return {r[0]: (*(format(Decimal(v), "f") for v in r[1:7]), r[7]) for r in rows}


def differences(truth: dict[str, dict[int, tuple[object, ...]]], dsn: str) -> list[str]:
    problems = []
    for symbol, rows in truth.items():
        stored = {t: r for t, r in stored_closed(dsn, symbol).items() if t in rows}
        missing = sorted(set(rows) - set(stored))
        wrong = sorted(t for t in stored if stored[t] != rows[t])
        if missing or wrong:
            problems.append(f"{symbol}: missing {missing[:3]}, wrong {wrong[:3]}")
    return problems


async def wait_for_truth(service: Service, sim: Simulator, dsn: str, start: int, end: int) -> None:
    """Wait (on commits) until the stored closed candles in [start, end] equal the truth."""
    truth = {symbol: truth_rows(sim, EX, symbol, start, end) for symbol in SYMBOLS}
    assert all(len(rows) == (end - start) // MINUTE_MS + 1 for rows in truth.values())
    with service.state.writer.open_commit_listener() as commits:
        while await trio.to_thread.run_sync(differences, truth, dsn):
            await commits.receive()


async def test_service_on_postgresql_equals_truth(pg_server: PgServer, pg_dsn: str) -> None:
    async with open_simulator(SimSettings(venues=(EX,))) as sim:
        cfg = feedd_config(sim, {EX: SYMBOLS})
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, postgres_backend(pg_dsn))
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                with trio.fail_after(60):
                    await sim.sleep_until_ms(start + 2 * MINUTE_MS + 500)
                    await wait_for_truth(service, sim, pg_dsn, start - 20 * MINUTE_MS,
                                         start + MINUTE_MS)  # fmt: skip
                response = await client.get(f"/ohlcv/{EX}/BTCUSDT/1m", params={"limit": 5})
                health = await client.get("/health")
                # the server goes away for a while; candles are held and written after
                await trio.to_thread.run_sync(pg_server.stop)
                with trio.fail_after(60):
                    await service.state.writer.wait_committed(
                        lambda: not service.state.writer.stats.healthy
                    )
                    down = await client.get("/health")
                    await trio.to_thread.run_sync(pg_server.start)
                    await sim.sleep_until_ms(start + 4 * MINUTE_MS + 500)
                    await wait_for_truth(service, sim, pg_dsn, start - 20 * MINUTE_MS,
                                         start + 3 * MINUTE_MS)  # fmt: skip
                healed = await client.get("/health")
            service.stop.set()
    assert response.status_code == 200 and len(response.json()) == 5
    assert health.json()["status"] == "ok", health.json()
    assert down.status_code == 503 or down.json()["status"] != "ok", down.text
    assert pg_server.password not in down.text
    assert healed.json()["status"] == "ok", healed.json()
    assert service.state.writer.stats.dropped == 0
