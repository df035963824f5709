"""Runtime reconfiguration: only the changed exchange restarts, nothing received is lost,
rapid changes converge on the last one without leaking tasks or connections, and the config
file is replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from e2e import compare, running_feedd, wait_for_truth, wait_on_commits

from feedd import config
from feedd.intervals import MINUTE_MS
from feedd.service import Service

BINANCE, BYBIT, OKX = "binance_futures", "bybit_futures", "okx_futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def supervised_tasks(service: Service) -> int:
    """Every task under the supervisor's nursery, recursively."""

    def count(nursery: trio.Nursery) -> int:
        return sum(1 + sum(count(n) for n in task.child_nurseries) for task in nursery.child_tasks)

    nursery = service.state.supervisor._nursery
    assert nursery is not None
    return count(nursery)


def settled(service: Service, name: str) -> bool:
    stats = service.state.supervisor.stats[name]
    return (
        stats.connections == 1
        and stats.streams_subscribed == len(SYMBOLS)
        and stats.backfill_pending == 0
        and not stats.backfilling
    )


async def test_fifty_rapid_toggles_converge_and_others_never_gap(tmp_path: Path) -> None:
    venues = {BINANCE: SYMBOLS, BYBIT: SYMBOLS, OKX: SYMBOLS}
    async with running_feedd(tmp_path, venues, bootstrap_load=3) as (sim, service, client):
        stats = service.state.supervisor.stats
        await wait_on_commits(service, lambda: all(settled(service, n) for n in venues))
        baseline = supervised_tasks(service)
        steady = {name: stats[name] for name in (BINANCE, BYBIT)}
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS

        async def toggle() -> None:
            response = await client.post("/toggleExchange", json={"exchange": OKX})
            assert response.status_code == 200, response.text

        with trio.fail_after(10):
            async with trio.open_nursery() as burst:
                for _ in range(50):
                    burst.start_soon(toggle)
        # 50 flips: back where it started, and so is the file on disk
        assert service.state.config.exchanges[OKX].enabled is True
        assert config.load(tmp_path / "config.json").config == service.state.config
        with trio.fail_after(30):
            await wait_on_commits(
                service,
                lambda: settled(service, OKX) and len(sim.venues[OKX].sessions) == 1,
            )
        assert set(service.state.supervisor._running) == set(venues)
        assert supervised_tasks(service) == baseline  # nothing leaked
        # the other exchanges never noticed: same runner, no reconnect, no hole
        for name in (BINANCE, BYBIT):
            assert stats[name] is steady[name] and stats[name].reconnects == 0
        end = start + 2 * MINUTE_MS
        with trio.fail_after(30):
            for name in venues:
                await wait_for_truth(service, sim, tmp_path / "ohlcv.db", name, SYMBOLS, start, end)
        for name in (BINANCE, BYBIT):
            assert len(sim.venues[name].sessions) == 1


async def test_everything_received_before_a_cancel_is_committed(tmp_path: Path) -> None:
    # No bootstrap and no faults: every candle the writer gets came off the WebSocket, so
    # "received by the writer" must equal "parsed by the exchange's sessions" after a cancel.
    async with running_feedd(tmp_path, {BINANCE: SYMBOLS}, bootstrap_load=0) as (
        sim,
        service,
        client,
    ):
        stats = service.state.supervisor.stats[BINANCE]
        writer = service.state.writer
        first_full = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
        await wait_on_commits(service, lambda: sim.now_ms() > first_full + 2 * MINUTE_MS + 20_000)
        off = await client.post("/toggleExchange", json={"exchange": BINANCE, "enabled": False})
        assert off.json()["restarted"] == [BINANCE]
        parsed = stats.candles
        with trio.fail_after(5):
            await writer.wait_committed(lambda: writer.stats.received >= parsed)
        assert writer.stats.received == parsed and stats.rest_candles == 0
        await writer.wait_committed(lambda: writer.stats.pending == 0)
        # and the closed candles up to the cancel are all there, without any heal
        db = tmp_path / "ohlcv.db"
        assert compare(sim, db, BINANCE, SYMBOLS, first_full, first_full + MINUTE_MS) == []


async def test_config_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_feedd(tmp_path, {BINANCE: SYMBOLS}) as (_sim, service, client):
        path = tmp_path / "config.json"
        before = path.read_bytes()

        def failing_replace(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", failing_replace)
        response = await client.post(
            "/exchangeSymbols", json={"exchange": BINANCE, "symbols": ["BTCUSDT"]}
        )
        assert response.status_code == 503
        assert "cannot save the config file" in response.json()["error"]
        assert path.read_bytes() == before
        leftovers = [p.name for p in await trio.Path(tmp_path).iterdir() if ".tmp" in p.name]
        assert leftovers == []
        # nothing was applied either
        assert service.state.config.exchanges[BINANCE].symbols == tuple(SYMBOLS)
        monkeypatch.undo()
        ok = await client.post(
            "/exchangeSymbols", json={"exchange": BINANCE, "symbols": ["BTCUSDT"]}
        )
        assert ok.status_code == 200
        assert config.load(path).config.exchanges[BINANCE].symbols == ("BTCUSDT",)
