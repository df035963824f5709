"""The front door: Host allow-list, bearer token, same-origin POSTs, JSON only, body limits,
path tricks. Ingest is off (every exchange disabled): these are about the web layer."""

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

from feedd import config
from feedd.service import Service, run_service
from feedd.web.security import host_name

TOKEN = "s3cret-token"


@asynccontextmanager
async def quiet_feedd(
    tmp_path: Path, **extra: Any
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    doc: dict[str, Any] = {
        "exchanges": {"binance_futures": {"enabled": False, "symbols": ["BTCUSDT"]}},
        "port": 0,
        **extra,
    }
    cfg = config.parse(doc).config
    path = tmp_path / "config.json"
    config.save(path, cfg)
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db", config_path=path)
        )
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
                yield service, client
        finally:
            service.stop.set()


def port_of(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:3000", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:3000", "::1"),
        ("Feedd.LAN:80", "feedd.lan"),
        ("evil.example", "evil.example"),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


async def test_dns_rebinding_host_is_refused(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path, allowed_hosts=["feedd.lan"]) as (service, client):
        port = port_of(service)
        evil = await client.get("/status", headers={"Host": f"attacker.example:{port}"})
        assert evil.status_code == 403 and evil.json()["field"] == "Host"
        deleted = await client.post(
            "/deleteDatabase",
            json={"confirm": "DELETE"},
            headers={"Host": f"attacker.example:{port}"},
        )
        assert deleted.status_code == 403
        for allowed in (f"localhost:{port}", f"feedd.lan:{port}", f"127.0.0.1:{port}"):
            assert (await client.get("/health", headers={"Host": allowed})).status_code == 200


async def test_cross_origin_posts_are_refused(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path) as (service, client):
        own = service.url
        writes = service.state.writer.stats
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/page.html"},
            {"Origin": own.replace("127.0.0.1", "localhost")},  # another origin, same machine
        ):
            response = await client.post(
                "/toggleExchange", json={"exchange": "binance_futures"}, headers=headers
            )
            assert response.status_code == 403, headers
        assert service.state.config.exchanges["binance_futures"].enabled is False
        same = await client.post(
            "/toggleExchange",
            json={"exchange": "binance_futures", "enabled": False},
            headers={"Origin": own, "Referer": own + "/index.html"},
        )
        assert same.status_code == 200
        assert writes.healthy


async def test_state_changes_need_a_json_body(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path) as (_service, client):
        form = await client.post("/deleteDatabase", data={"confirm": "DELETE"})
        assert form.status_code == 415
        text = await client.post(
            "/deleteDatabase",
            content=b'{"confirm": "DELETE"}',
            headers={"Content-Type": "text/plain"},
        )
        assert text.status_code == 415
        broken = await client.post(
            "/toggleExchange", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400 and broken.json()["field"] == "body"
        listed = await client.post("/toggleExchange", json=["binance_futures"])
        assert listed.status_code == 400


async def test_oversized_body_is_refused(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path) as (_service, client):
        before = (tmp_path / "config.json").read_bytes()
        huge = b'{"exchanges": {}, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = await client.post(
            "/config", content=huge, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]
        assert (tmp_path / "config.json").read_bytes() == before


async def test_token_required_everywhere_but_static_files(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path, api_token=TOKEN) as (service, client):
        for path in ("/status", "/config", "/ohlcv/binance_futures/BTCUSDT/1m", "/metrics"):
            missing = await client.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.get("/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.get("/config", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        assert right.json()["api_token"] == "***"
        post = await client.post("/restart", json={})
        assert post.status_code == 401
        # The token posted back redacted keeps the real one.
        cfg = right.json()
        kept = await client.post("/config", json=cfg, headers={"Authorization": f"Bearer {TOKEN}"})
        assert kept.status_code == 200 and kept.json()["restart_required"] == []
        assert service.state.config.api_token == TOKEN

        host, port = "127.0.0.1", port_of(service)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket(host, port, "/ws", use_ssl=False):
                pass
        assert rejected.value.status_code == 401
        async with trio_websocket.open_websocket(
            host, port, f"/ws?token={TOKEN}", use_ssl=False
        ) as ws:
            await ws.send_message('{"op": "ping"}')
            assert await ws.get_message() == '{"type":"pong"}'
        async with trio_websocket.open_websocket(
            host,
            port,
            "/ws",
            use_ssl=False,
            extra_headers=[(b"Authorization", f"Bearer {TOKEN}".encode())],
        ) as ws:
            await ws.send_message('{"op": "ping"}')
            assert await ws.get_message() == '{"type":"pong"}'


async def test_cross_site_websocket_is_refused(tmp_path: Path) -> None:
    async with quiet_feedd(tmp_path) as (service, _client):
        port = port_of(service)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket(
                "127.0.0.1",
                port,
                "/ws",
                use_ssl=False,
                extra_headers=[(b"Origin", b"http://evil.example")],
            ):
                pass
        assert rejected.value.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/../config.json",
        "/%2e%2e/config.json",
        "/..%2fconfig.json",
        "/js/../../pyproject.toml",
        "/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/ohlcv/binance_futures/..%2F..%2Fetc/1m",
        "/exchangeSymbols/..%2Fconfig",
        "/web/index.html%00.json",
    ],
)
async def test_path_tricks_reach_nothing(tmp_path: Path, path: str) -> None:
    async with quiet_feedd(tmp_path) as (service, _client):
        # raw target: httpx would otherwise normalise the dots away
        async with httpx.AsyncClient(timeout=10) as raw:
            request = raw.build_request("GET", service.url)
            request.url = request.url.copy_with(raw_path=path.encode())
            response = await raw.send(request)
        assert response.status_code in (400, 404), response.text
        assert "error" in response.json()
        assert b"exchanges" not in response.content and b"root:" not in response.content
