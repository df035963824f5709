"""The OpenAPI document against the live app: same routes and methods both ways, and real
answers (successes and errors) match the documented schemas for their status codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
from e2e import running_feedd, wait_on_commits

from feedd.web.app import create_app
from feedd.web.openapi import document

BINANCE = "binance_futures"
#: the dashboard's files: documented in the README, not API routes
STATIC_RULES = {"/", "/<path:name>"}
EXAMPLES = {"exchange": BINANCE, "symbol": "BTCUSDT", "interval": "1h"}
BAD_BODIES: list[tuple[dict[str, str], bytes]] = [
    ({"Content-Type": "application/json"}, b"[]"),  # not an object
    ({"Content-Type": "text/plain"}, b"{}"),  # not JSON
]


def spec_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered undocumented {status}"
    content = responses[str(status)]["content"]
    if "application/json" in content:
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        jsonschema.validate(body, schema)


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = document()
    app = create_app(None)  # type: ignore[arg-type]  # routes only; no request is served
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.rule in STATIC_RULES:
            continue
        methods = {"get"} if rule.websocket else {m.lower() for m in rule.methods or ()}
        for method in methods - {"head", "options"}:
            served.add((spec_path(rule.rule), method))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["openapi"].startswith("3.")
    for path, ops in doc["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params, path


async def test_live_answers_match_the_document(tmp_path: Path) -> None:
    doc = document()
    async with running_feedd(tmp_path, {BINANCE: ["BTCUSDT"]}, bootstrap_load=90) as (
        _sim,
        service,
        client,
    ):
        await wait_on_commits(
            service, lambda: service.state.supervisor.stats[BINANCE].rest_candles > 0
        )
        for path, ops in doc["paths"].items():
            if path in ("/ws", "/backfill/{job_id}"):  # no job yet: test_backfill_jobs covers it
                continue
            url = path.format(**EXAMPLES)
            if "get" in ops:
                response = await client.get(url)
                body = response.json() if "json" in response.headers["content-type"] else None
                check(doc, path, "get", response.status_code, body)
                assert response.status_code == 200, (url, response.text)
                for name, value in (("limit", "0"), ("since", "x"), ("format", "xml")):
                    declared = {p["name"] for p in ops["get"].get("parameters", [])}
                    if name in declared:
                        bad = await client.get(url, params={name: value})
                        check(doc, path, "get", bad.status_code, bad.json())
                        assert bad.status_code == 400 and bad.json()["field"] == name
                if "{exchange}" in path:
                    unknown = await client.get(path.format(**{**EXAMPLES, "exchange": "kraken"}))
                    check(doc, path, "get", unknown.status_code, unknown.json())
            if "post" in ops:
                for headers, content in BAD_BODIES:
                    refused = await client.post(url, content=content, headers=headers)
                    check(doc, path, "post", refused.status_code, refused.json())
                    assert refused.status_code in (400, 415)
        # one documented success per POST route, in an order that leaves feedd running
        posts = [
            ("/exchangeSymbols", {"exchange": BINANCE, "add": ["ETHUSDT"]}),
            ("/toggleExchange", {"exchange": "okx_futures", "enabled": False}),
            ("/config", (await client.get("/config")).json()),
            ("/restart", {}),
            ("/deleteDatabase", {"confirm": "DELETE"}),
            (
                "/backfill",
                {
                    "exchange": BINANCE,
                    "symbols": ["BTCUSDT"],
                    "interval": "1m",
                    "since": _sim.now_ms() - 3_600_000,
                    "until": _sim.now_ms(),
                },
            ),
        ]
        assert {p for p, _ in posts} == {p for p, ops in doc["paths"].items() if "post" in ops}
        for path, payload in posts:
            response = await client.post(path, json=payload)
            check(doc, path, "post", response.status_code, response.json())
            assert response.status_code == (201 if path == "/backfill" else 200), response.text
