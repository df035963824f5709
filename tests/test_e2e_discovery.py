"""Instrument discovery on all three venues: configured symbols the venue does not list are
reported and skipped, and a symbol listed later is collected without a restart."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
from e2e import feedd_config, wait_for_truth

from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings

VENUES = ("binance_futures", "bybit_futures", "okx_futures")
NEVER = "QQQQQQQUSDT"  # not in any venue's instrument list


async def test_unlisted_skipped_then_picked_up_when_listed(tmp_path: Path) -> None:
    db = tmp_path / "ohlcv.db"
    settings = SimSettings(venues=VENUES, unlisted=frozenset({"SOLUSDT"}))
    async with open_simulator(settings) as sim:
        cfg = feedd_config(
            sim, {v: ["BTCUSDT", "SOLUSDT", NEVER] for v in VENUES}, bootstrap_load=10
        )
        # at 60x, a refresh every 2 s is one every 2 simulated minutes
        cfg = attrs.evolve(
            cfg,
            exchanges={
                name: attrs.evolve(ex, instruments_refresh=2.0)
                for name, ex in cfg.exchanges.items()
            },
        )
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, db)
            stats = service.state.supervisor.stats
            with trio.fail_after(60):
                for venue in VENUES:
                    await wait_for_truth(service, sim, db, venue, ["BTCUSDT"], start, start)
                before = {v: dict(stats[v].stream_states) for v in VENUES}
                sim.market.list_symbol("SOLUSDT")
                listed = sim.now_ms() // MINUTE_MS * MINUTE_MS
                end = listed + 4 * MINUTE_MS
                await sim.sleep_until_ms(end + MINUTE_MS)
                for venue in VENUES:
                    await wait_for_truth(
                        service, sim, db, venue, ["BTCUSDT", "SOLUSDT"], listed - 2 * MINUTE_MS, end
                    )
            service.stop.set()
    for venue in VENUES:
        assert before[venue]["SOLUSDT 1m"] == "unlisted", venue
        assert before[venue][f"{NEVER} 1m"] == "unlisted", venue
        assert stats[venue].stream_states["SOLUSDT 1m"] == "live", venue
        assert stats[venue].stream_states[f"{NEVER} 1m"] == "unlisted", venue
        assert stats[venue].reconnects == 0, venue  # BTCUSDT's connection was never touched
