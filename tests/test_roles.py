"""Node roles: the config key, what a collector and an API node serve and refuse, and that
an API node opens no session with any venue."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from e2e import feedd_config, running_feedd

from feedd import config
from feedd.errors import ConfigError
from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings

EX = "binance_futures"
#: deploy/cluster/'s sample configs
SAMPLES = ("collector-a", "collector-b", "api")


def test_role_defaults_to_all_and_round_trips() -> None:
    assert config.parse({}).config.role == "all"
    for role in ("all", "collector", "api"):
        cfg = config.parse({"role": role}).config
        assert cfg.role == role
        assert config.parse(cfg.to_json()).config == cfg


@pytest.mark.parametrize("value", ["API", "reader", "", 1, None, ["api"]])
def test_bad_role_is_named(value: object) -> None:
    with pytest.raises(ConfigError) as error:
        config.parse({"role": value})
    assert error.value.path == "role"
    assert '"all", "collector", "api"' in error.value.problem
    assert repr(value) in error.value.problem


@asynccontextmanager
async def node(
    sim: Simulator, tmp_path: Path, role: str, **extra: Any
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    cfg = feedd_config(sim, {EX: ["BTCUSDT"]}, role=role, **extra)
    path = tmp_path / f"{role}.json"
    config.save(path, cfg)
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db", config_path=path)
        )
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                yield service, client
        finally:
            service.stop.set()


async def test_collector_serves_health_status_metrics_only(tmp_path: Path) -> None:
    async with (
        open_simulator(SimSettings(venues=(EX,))) as sim,
        node(sim, tmp_path, "collector") as (service, client),
    ):
        for path in ("/health", "/status", "/metrics"):
            response = await client.get(path)
            assert response.status_code == 200, path
        assert (await client.head("/health")).status_code == 200
        assert (await client.get("/status")).json()["role"] == "collector"
        refused = [
            ("GET", "/"),
            ("GET", "/ohlcv/binance_futures/BTCUSDT/1m"),
            ("GET", "/config"),
            ("GET", "/coverage"),
            ("GET", "/logs"),
            ("GET", "/backfill"),
            ("GET", "/openapi.json"),
            ("GET", "/js/console.js"),
            ("GET", "/no/such/route"),
            ("POST", "/config"),
            ("POST", "/deleteDatabase"),
        ]
        for method, path in refused:
            response = await client.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (method, path)
            message = response.json()["error"]
            assert 'this node is a collector (role "collector")' in message, path
            assert "/health, /metrics, /status" in message
        port = int(service.url.rsplit(":", 1)[1])
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False):
                pass
        assert rejected.value.status_code == 404
        # It collects: the venue has a session with it.
        await service.state.writer.wait_committed(lambda: service.state.writer.stats.committed > 0)
        assert sim.venues[EX].stats["ws_connections"] >= 1


async def test_api_node_opens_no_venue_session_and_refuses_ingest_changes(
    tmp_path: Path,
) -> None:
    async with (
        open_simulator(SimSettings(venues=(EX,))) as sim,
        node(sim, tmp_path, "api") as (service, client),
    ):
        with trio.fail_after(30):
            # Two simulated minutes: a role that collected would have connected long before.
            await sim.sleep_until_ms(sim.now_ms() + 2 * MINUTE_MS)
        current = (await client.get("/config")).json()
        assert current["role"] == "api"
        # A change that leaves exchanges alone is applied, and still starts nothing.
        current["bootstrap_load"] = 30
        kept = await client.post("/config", json=current)
        assert kept.status_code == 200, kept.text
        assert (await client.post("/restart", json={})).status_code == 200
        with trio.fail_after(30):
            await sim.sleep_until_ms(sim.now_ms() + MINUTE_MS)
        stats = sim.venues[EX].stats
        assert stats["ws_connections"] == 0
        assert stats["rest_requests"] == 0

        status = (await client.get("/status")).json()
        assert status["role"] == "api"
        (binance,) = (ex for ex in status["exchanges"] if ex["name"] == EX)
        assert binance["state"] == "remote"
        assert [row["state"] for row in binance["symbols"]] == ["remote"]
        assert (await client.get("/ohlcv/binance_futures/BTCUSDT/1m")).status_code == 200
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/health")).status_code == 200

        changed = dict(current, exchanges={EX: {"symbols": ["ETHUSDT"]}})
        refusals = [
            ("/config", changed, "its exchanges and symbols cannot change"),
            ("/exchangeSymbols", {"exchange": EX, "add": ["ETHUSDT"]}, "no symbols to change"),
            ("/toggleExchange", {"exchange": EX}, "no exchange to toggle"),
            (
                "/backfill",
                {"exchange": EX, "symbols": ["BTCUSDT"], "interval": "1m", "since": 0},
                "runs no backfill job",
            ),
            ("/deleteDatabase", {"confirm": "DELETE"}, "shared with the cluster"),
        ]
        for path, body, words in refusals:
            response = await client.post(path, json=body)
            assert response.status_code == 409, path
            message = response.json()["error"]
            assert 'role "api"' in message and words in message, message
        listing = await client.get(f"/exchangeSymbols/{EX}")
        assert listing.status_code == 409
        assert "does not ask the venues" in listing.json()["error"]
        assert service.state.config.exchanges[EX].symbols == ("BTCUSDT",)
        assert stats["rest_requests"] == 0
        assert stats["ws_connections"] == 0


async def test_role_is_read_at_start(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {EX: ["BTCUSDT"]}) as (_sim, service, client):
        current = (await client.get("/config")).json()
        current["role"] = "api"
        response = await client.post("/config", json=current)
        assert response.status_code == 200
        assert response.json()["restart_required"] == ["role"]
        # Still the node it started as: everything served, still collecting.
        assert (await client.get("/status")).json()["role"] == "all"
        assert service.state.security.role == "all"
        assert (await client.post("/toggleExchange", json={"exchange": EX})).status_code == 200


def test_cluster_samples_parse_as_two_active_active_collectors_and_an_api_node() -> None:
    folder = Path(__file__).resolve().parent.parent / "deploy" / "cluster"
    environ = {
        "FEEDD_DATABASE_URL": "postgresql://feedd:pw@db.example.lan:5432/feedd",
        "FEEDD_API_TOKEN": "t0ken",
    }
    loaded = {name: config.load(folder / f"{name}.json", environ) for name in SAMPLES}
    assert all(item.warnings == () for item in loaded.values())
    roles = {name: item.config.role for name, item in loaded.items()}
    assert roles == {"collector-a": "collector", "collector-b": "collector", "api": "api"}
    a, b = loaded["collector-a"].config, loaded["collector-b"].config
    assert a.exchanges == b.exchanges and a.enabled_exchanges()
    for item in loaded.values():
        assert item.config.storage.backend == "postgresql"
        assert item.config.storage.dsn == environ["FEEDD_DATABASE_URL"]
