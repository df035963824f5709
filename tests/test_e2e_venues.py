"""All three venues at once against the simulator, one of them faulted: every database
series equals the truth, and the faulted venue's trouble does not delay the others."""

from __future__ import annotations

from pathlib import Path

import trio
from e2e import compare, feedd_config, wait_for_truth

from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings

VENUES = ("binance_futures", "bybit_futures", "okx_futures")
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


async def test_three_venues_with_one_faulted(tmp_path: Path) -> None:
    db = tmp_path / "ohlcv.db"
    async with open_simulator(SimSettings(venues=VENUES)) as sim:
        cfg = feedd_config(sim, {name: SYMBOLS for name in VENUES}, bootstrap_load=5)
        start = sim.now_ms() // MINUTE_MS * MINUTE_MS
        okx = sim.venues["okx_futures"].faults
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(run_service, cfg, db)
            with trio.fail_after(60):
                await sim.sleep_until_ms(start + MINUTE_MS + 20_000)
                okx.drop_connections()
                await sim.sleep_until_ms(start + 2 * MINUTE_MS + 20_000)
                okx.skip_final("BTCUSDT")
                okx.send_garbage("truncated")
                await sim.sleep_until_ms(start + 3 * MINUTE_MS + 20_000)
                okx.stall(4.0)
                end = start + 4 * MINUTE_MS
                # the healthy venues are complete before the faulted one has recovered
                for name in ("binance_futures", "bybit_futures"):
                    await wait_for_truth(service, sim, db, name, SYMBOLS, start, end)
                healthy_done = sim.now_ms()
                await wait_for_truth(
                    service, sim, db, "okx_futures", SYMBOLS, start - 5 * MINUTE_MS, end
                )
            stats = service.state.supervisor.stats
            service.stop.set()
    assert healthy_done < end + 2 * MINUTE_MS
    assert stats["okx_futures"].reconnects >= 2
    assert stats["binance_futures"].reconnects == 0
    assert stats["bybit_futures"].reconnects == 0
    for name in VENUES:
        assert compare(sim, db, name, SYMBOLS, start - 5 * MINUTE_MS, end) == [], name
