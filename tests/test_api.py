"""Every route of the API against a live feedd fed by the simulator, happy paths and errors."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import jsonschema
import orjson
import pytest
import trio
from e2e import running_feedd, wait_for_stored, wait_on_commits

from feedd.web.openapi import document

BINANCE, BYBIT = "binance_futures", "bybit_futures"
SYMBOLS = {BINANCE: ["BTCUSDT", "ETHUSDT"], BYBIT: ["BTCUSDT"]}


def schema(name: str) -> dict[str, object]:
    """A component schema of our OpenAPI document, resolvable on its own."""
    doc = document()
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def disk_config(tmp_path: Path) -> dict[str, object]:
    return json.loads((tmp_path / "config.json").read_text())


async def test_read_routes(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, SYMBOLS) as (_sim, service, client):
        eth = ("binance_futures", "ETHUSDT", "1m")
        await wait_on_commits(service, lambda: service.state.hub.last_price(eth) is not None)
        # /config: the running configuration, token never shown
        cfg = (await client.get("/config")).json()
        assert cfg["exchanges"][BINANCE]["symbols"] == ["BTCUSDT", "ETHUSDT"]

        exchanges = (await client.get("/exchanges")).json()["exchanges"]
        by_name = {e["name"]: e for e in exchanges}
        assert set(by_name) == {BINANCE, BYBIT, "okx_futures"}
        assert by_name[BINANCE]["enabled"] and by_name[BINANCE]["symbols"] == SYMBOLS[BINANCE]
        assert by_name["okx_futures"] == {
            "name": "okx_futures",
            "enabled": False,
            "symbols": [],
            "state": "disabled",
            "health": "disabled",
            "connections": 0,
            "streams": 0,
        }

        status = (await client.get("/status")).json()
        jsonschema.validate(status, schema("Status"))
        workers = {w["name"]: w for w in status["exchanges"]}
        binance = workers[BINANCE]
        assert binance["connections"] == 1 and binance["health"] == "healthy"
        eth = next(s for s in binance["symbols"] if s["symbol"] == "ETHUSDT")
        assert eth["state"] == "live" and eth["last"]["close"] > 0
        assert abs(eth["last"]["time"] - status["time"]) < 60_000
        assert status["system"]["cpu_count"] >= 1 and status["system"]["process_rss"] > 0
        assert status["writer"]["committed"] > 0

        listed = (await client.get(f"/exchangeSymbols/{BINANCE}")).json()
        assert "SOLUSDT" in listed["listed"] and listed["configured"] == SYMBOLS[BINANCE]
        assert listed["listed"] == sorted(listed["listed"]) and listed["fetched_at"] > 0
        # an exchange that is not running: its list is fetched on demand
        okx = await client.get("/exchangeSymbols/okx_futures")
        assert okx.status_code in (200, 503)

        metrics = (await client.get("/metrics")).text
        assert 'feedd_exchange_connections{exchange="binance_futures"} 1.0' in metrics
        assert "feedd_writer_queue_depth" in metrics
        assert "feedd_writer_batch_latency_seconds" in metrics


async def test_logs_since(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, _service, client):
        first = (await client.get("/logs")).json()
        assert any("feedd serving on" in line["message"] for line in first["lines"])
        jsonschema.validate(first["lines"][0], schema("LogLine"))
        logging.getLogger("feedd.test").warning("a line for the test")
        newer = (await client.get("/logs", params={"since": first["next"]})).json()
        mine = [line["message"] for line in newer["lines"] if line["logger"] == "feedd.test"]
        assert mine == ["a line for the test"]
        assert newer["next"] > first["next"]
        only_errors = (await client.get("/logs", params={"level": "error"})).json()
        assert all(line["level"] in ("error", "critical") for line in only_errors["lines"])
        bad = await client.get("/logs", params={"level": "chatty"})
        assert bad.status_code == 400 and bad.json()["field"] == "level"


async def test_ohlcv_json_csv_and_resampled(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}, bootstrap_load=120) as (
        _sim,
        service,
        client,
    ):
        await wait_for_stored(service, BINANCE, "BTCUSDT", "1m", 120)
        url = f"/ohlcv/{BINANCE}/BTCUSDT"
        rows = (await client.get(f"{url}/1m", params={"limit": 50})).json()
        assert len(rows) == 50
        jsonschema.validate(rows[0], schema("Candle"))
        # The same window of closed candles for both: ingest keeps adding and updating the
        # newest while the two requests are made.
        window = {"since": rows[0]["open_time"], "until": rows[-2]["open_time"]}
        rows = (await client.get(f"{url}/1m", params=window)).json()
        csv_response = await client.get(f"{url}/1m", params={**window, "format": "csv"})
        assert csv_response.headers["content-type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(csv_response.text)))
        assert [int(r["open_time"]) for r in parsed] == [r["open_time"] for r in rows]
        assert [float(r["close"]) for r in parsed] == [r["close"] for r in rows]
        assert {r["closed"] for r in parsed} <= {"true", "false"}

        hourly = (await client.get(f"{url}/1h", params={"limit": 3})).json()
        assert hourly and all(r["open_time"] % 3_600_000 == 0 for r in hourly)
        assert hourly[-1]["closed"] is False  # the forming hour is marked incomplete
        five = (await client.get(f"{url}/5m", params={"format": "csv", "limit": 2})).text
        assert five.splitlines()[0].startswith("open_time,open,high,low,close,volume")

        for path, field, status in [
            (f"{url}/1m?limit=0", "limit", 400),
            (f"{url}/1m?limit=5001", "limit", 400),
            (f"{url}/1m?since=-1", "since", 400),
            (f"{url}/1m?format=xml", "format", 400),
            (f"{url}/7m", "interval", 400),
            (f"/ohlcv/{BINANCE}/btcusdt/1m", "symbol", 400),
            ("/ohlcv/kraken/BTCUSDT/1m", "exchange", 404),
        ]:
            response = await client.get(path)
            assert response.status_code == status, path
            assert response.json()["field"] == field, path


async def test_control_routes(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, SYMBOLS) as (_sim, service, client):
        stats = service.state.supervisor.stats
        bybit_before = stats[BYBIT]

        # add a listed symbol: saved, and only that exchange restarts
        added = await client.post(
            "/exchangeSymbols", json={"exchange": BINANCE, "add": ["SOLUSDT"]}
        )
        assert added.status_code == 200, added.text
        assert added.json()["restarted"] == [BINANCE]
        assert added.json()["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert disk_config(tmp_path)["exchanges"][BINANCE]["symbols"][-1] == "SOLUSDT"
        assert stats[BYBIT] is bybit_before  # untouched
        sol = (BINANCE, "SOLUSDT", "1m")
        await wait_on_commits(service, lambda: service.state.hub.last_price(sol) is not None)

        # refusals change nothing
        before = (tmp_path / "config.json").read_bytes()
        for body, field in [
            ({"exchange": BINANCE, "add": ["QQQQQQQUSDT"]}, "add[0]"),
            ({"exchange": BINANCE, "symbols": ["BTCUSDT", "btc"]}, "symbols[1]"),
            ({"exchange": BINANCE, "add": "SOLUSDT"}, "add"),
            ({"exchange": BINANCE}, "symbols"),
            ({"add": ["SOLUSDT"]}, "exchange"),
        ]:
            refused = await client.post("/exchangeSymbols", json=body)
            assert refused.status_code == 400, body
            assert refused.json()["field"] == field, body
        unknown = await client.post("/exchangeSymbols", json={"exchange": "kraken", "add": []})
        assert unknown.status_code == 404
        assert (tmp_path / "config.json").read_bytes() == before

        # remove, replace
        removed = await client.post(
            "/exchangeSymbols", json={"exchange": BINANCE, "remove": ["ETHUSDT"]}
        )
        assert removed.json()["symbols"] == ["BTCUSDT", "SOLUSDT"]
        replaced = await client.post(
            "/exchangeSymbols", json={"exchange": BINANCE, "symbols": ["ETHUSDT"]}
        )
        assert replaced.json()["symbols"] == ["ETHUSDT"]

        # toggle off and on
        off = await client.post("/toggleExchange", json={"exchange": BYBIT, "enabled": False})
        assert off.json() == {
            "ok": True,
            "exchange": BYBIT,
            "enabled": False,
            "restarted": [BYBIT],
            "restart_required": [],
            "warnings": [],
        }
        assert stats[BYBIT].state == "disabled" and stats[BYBIT].connections == 0
        assert disk_config(tmp_path)["exchanges"][BYBIT]["enabled"] is False
        flipped = await client.post("/toggleExchange", json={"exchange": BYBIT})
        assert flipped.json()["enabled"] is True
        bad_toggle = await client.post("/toggleExchange", json={"exchange": BYBIT, "enabled": 1})
        assert bad_toggle.status_code == 400 and bad_toggle.json()["field"] == "enabled"

        # a whole config: validated first, written atomically, only the changed exchange restarts
        cfg = (await client.get("/config")).json()
        cfg["exchanges"][BYBIT]["symbols"] = ["ETHUSDT"]
        cfg["port"] = 1
        posted = await client.post("/config", json=cfg)
        assert posted.json()["restarted"] == [BYBIT]
        assert posted.json()["restart_required"] == ["port"]
        partial = await client.post("/config", json={"port": 1})
        assert partial.status_code == 400 and partial.json()["field"] == "exchanges"
        cfg["intervals"] = ["7m"]
        before = (tmp_path / "config.json").read_bytes()
        invalid = await client.post("/config", json=cfg)
        assert invalid.status_code == 400 and invalid.json()["field"] == "intervals[0]"
        assert (tmp_path / "config.json").read_bytes() == before
        leftovers = [p for p in await trio.Path(tmp_path).iterdir() if ".tmp" in p.name]
        assert leftovers == []  # no temp file left behind

        # restart: re-reads the file; an invalid file changes nothing
        restarted = await client.post("/restart", json={})
        assert restarted.json()["restarted"] == [BINANCE, BYBIT]
        (tmp_path / "config.json").write_text('{"batch_interval": "fast"}')
        broken = await client.post("/restart", json={})
        assert broken.status_code == 400 and broken.json()["field"] == "batch_interval"
        assert service.state.config.exchanges[BYBIT].symbols == ("ETHUSDT",)


async def test_delete_database_while_ingesting(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}, bootstrap_load=60) as (
        _sim,
        service,
        client,
    ):
        url = f"/ohlcv/{BINANCE}/BTCUSDT/1m"
        # The whole bootstrap stored first: REST candles still in flight would land after
        # the wipe below.
        await wait_for_stored(service, BINANCE, "BTCUSDT", "1m", 60)
        await wait_on_commits(
            service, lambda: service.state.supervisor.stats[BINANCE].backfill_pending == 0
        )
        assert len((await client.get(url)).json()) > 30
        refused = await client.post("/deleteDatabase", json={"confirm": "yes"})
        assert refused.status_code == 400 and refused.json()["field"] == "confirm"
        assert len((await client.get(url)).json()) > 30

        deleted = await client.post("/deleteDatabase", json={"confirm": "DELETE"})
        assert deleted.json() == {"ok": True}
        after = (await client.get(url)).json()
        assert len(after) <= 2  # at most what streamed in since
        committed = service.state.writer.stats.committed
        await wait_on_commits(service, lambda: service.state.writer.stats.committed > committed + 2)
        assert (await client.get(url)).json()  # ingest continues into the fresh schema
        assert service.state.writer.stats.healthy


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/exchangeSymbols/kraken", 404),
        ("DELETE", "/config", 405),
        ("POST", "/status", 405),
    ],
)
async def test_errors_are_json(tmp_path: Path, method: str, path: str, status: int) -> None:
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, _service, client):
        response = await client.request(method, path, json={})
        assert response.status_code == status
        assert orjson.loads(response.content)["error"]


async def test_api_contract_edges(tmp_path: Path) -> None:
    """405 names the methods in Allow; a plain GET /ws is told to upgrade (426), not 404;
    null where the body schema wants a boolean, an array or a string is 400 naming the field,
    and changes nothing."""
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}) as (_sim, service, client):
        for method, path, allowed in (
            ("DELETE", "/config", {"GET", "POST"}),
            ("PUT", "/health", {"GET"}),
            ("POST", "/status", {"GET"}),
            ("GET", "/toggleExchange", {"POST"}),
        ):
            response = await client.request(method, path, json={})
            assert response.status_code == 405, (method, path, response.text)
            assert allowed <= set(response.headers["allow"].replace(" ", "").split(","))
            assert orjson.loads(response.content)["error"]

        plain = await client.get("/ws")
        assert plain.status_code == 426
        assert plain.headers["upgrade"] == "websocket"
        assert "WebSocket" in orjson.loads(plain.content)["error"]

        before = service.state.config
        for path, body, field in (
            ("/toggleExchange", {"exchange": BINANCE, "enabled": None}, "enabled"),
            (
                "/exchangeSymbols",
                {"exchange": BINANCE, "symbols": None, "add": ["ETHUSDT"]},
                "symbols",
            ),
            ("/exchangeSymbols", {"exchange": BINANCE, "add": None, "symbols": ["BTCUSDT"]}, "add"),
            (
                "/exchangeSymbols",
                {"exchange": BINANCE, "remove": None, "add": ["ETHUSDT"]},
                "remove",
            ),
            ("/exchangeSymbols", {"exchange": None, "symbols": ["BTCUSDT"]}, "exchange"),
            ("/deleteDatabase", {"confirm": None}, "confirm"),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["field"] == field, response.json()
        whole = (await client.get("/config")).json()
        for key, value, field in (
            ("allowed_hosts", None, "allowed_hosts"),
            ("api_token", None, "api_token"),
            ("intervals", None, "intervals"),
        ):
            response = await client.post("/config", json={**whole, key: value})
            assert response.status_code == 400, (key, response.text)
            assert response.json()["field"] == field
        whole["exchanges"][BINANCE]["enabled"] = None
        response = await client.post("/config", json=whole)
        assert response.status_code == 400
        assert response.json()["field"] == f"exchanges.{BINANCE}.enabled"
        assert service.state.config is before  # nothing changed
