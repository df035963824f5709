"""SIGHUP re-reads the config file and restarts ingest from it, as POST /restart does; a file
that does not validate is logged and changes nothing. A real feedd process against the
simulator; systemd's notify socket sees RELOADING=1 then READY=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket

from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings

EX = "binance_futures"


@pytest.fixture
def notify_path() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="sdn")  # AF_UNIX paths stop at 108 bytes
    yield os.path.join(folder, "notify")
    shutil.rmtree(folder)


class Log:
    """feedd's JSON log lines, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.records: list[dict[str, Any]] = []

    async def wait_for(self, pattern: str) -> dict[str, Any]:
        """The next record whose message matches ``pattern`` (records before it are kept)."""
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                record = json.loads(line)
                self.records.append(record)
                if re.search(pattern, record["message"]):
                    return record
            chunk = await self._stream.receive_some()
            assert chunk, f"feedd ended before logging {pattern!r}: {self.records}"
            self._buffer += chunk


@asynccontextmanager
async def feedd_process(config: Path, notify_path: str) -> AsyncIterator[tuple[trio.Process, Log]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHDOG_", "JOURNAL_"))}
    env["NOTIFY_SOCKET"] = notify_path
    command = [sys.executable, "-m", "feedd", "--config", str(config), "--log-format", "json"]
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, command, env=env, stderr=-1, check=False)
        process: trio.Process = await nursery.start(run)
        assert process.stderr is not None
        try:
            yield process, Log(process.stderr)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)


async def notified(sock: trio.socket.SocketType) -> bytes:
    while True:
        message: bytes = await sock.recv(4096)
        if message != b"WATCHDOG=1":
            return message


async def first_candle(url: str, symbol: str) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with trio_websocket.open_websocket(host, int(port), "/ws", use_ssl=False) as ws:
        subscribe = {"op": "subscribe", "topic": "candles", "exchange": EX, "symbol": symbol}
        await ws.send_message(orjson.dumps(subscribe).decode())
        while True:
            doc = orjson.loads(await ws.get_message())
            if doc.get("type") == "candles" and doc.get("data"):
                assert {c["symbol"] for c in doc["data"]} == {symbol}
                return


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


async def test_sighup_reloads_the_config_file(tmp_path: Path, notify_path: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(notify_path)
    with sock, trio.fail_after(120):
        async with open_simulator(SimSettings(venues=(EX,))) as sim:
            venue = sim.venues[EX]
            config = tmp_path / "config.json"
            doc = {
                "exchanges": {
                    EX: {"symbols": ["BTCUSDT"], "ws_url": venue.ws_url, "rest_url": venue.rest_url}
                },
                "database_path": str(tmp_path / "ohlcv.db"),
                "bootstrap_load": 0,
                "port": 0,
            }
            write(config, doc)
            async with feedd_process(config, notify_path) as (process, log):
                ready = await notified(sock)
                match = re.fullmatch(rb"READY=1\nSTATUS=serving on (http://[\d.:]+)", ready)
                assert match, ready
                url = match.group(1).decode()

                # A changed symbol list takes effect.
                doc["exchanges"][EX]["symbols"] = ["BTCUSDT", "ETHUSDT"]
                write(config, doc)
                process.send_signal(signal.SIGHUP)
                await log.wait_for(r"^received SIGHUP: reloading .*config\.json$")
                reloading = await notified(sock)
                assert re.fullmatch(
                    rb"RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading the config file", reloading
                ), reloading
                await log.wait_for(r"^reload done$")
                assert await notified(sock) == ready
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    running = (await client.get("/config")).json()
                    assert running["exchanges"][EX]["symbols"] == ["BTCUSDT", "ETHUSDT"]
                await first_candle(url, "ETHUSDT")  # ingest really runs the new symbol

                # A file that does not validate is logged and changes nothing.
                config.write_text('{"exchanges": {"binance_futures": {"silence_timeout": 1e-9')
                process.send_signal(signal.SIGHUP)
                refused = await log.wait_for(r"^reload refused")
                assert refused["level"] == "ERROR"
                assert "is not valid JSON" in refused["message"]
                doc["exchanges"][EX]["silence_timeout"] = 1e-9
                write(config, doc)
                process.send_signal(signal.SIGHUP)
                refused = await log.wait_for(r"^reload refused")
                assert "silence_timeout: must be between 2 and 3600" in refused["message"]
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    running = (await client.get("/config")).json()
                    assert running["exchanges"][EX]["symbols"] == ["BTCUSDT", "ETHUSDT"]
                    assert "silence_timeout" not in running["exchanges"][EX]
                assert process.returncode is None  # still serving

                process.send_signal(signal.SIGTERM)
                await log.wait_for(r"^feedd stopped$")
                await process.wait()
            assert process.returncode == 0
    assert not [r for r in log.records if "Traceback" in json.dumps(r)]
