"""A filter flood against ``/ws``: clients that subscribe to new candle series as fast as
their sockets go (one used to hold 100,000 filters, each matched against every candle, and
starve the event loop until feedd's own watchdog dropped the venue connections).

Checked: a well-behaved client still gets every closed candle on time, no venue connection
is dropped, the flood is refused at the message rate and the filter cap, and the store
equals the truth.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import trio

from chaos.harness import VENUES, poll_until, problems, read_line
from chaos.test_client_abuse import LATENCY_P99_S, PLAN, GoodClient, feedd_on_sim
from feedd.intervals import MINUTE_MS
from feedd.web.filters import MAX_FILTERS_PER_CLIENT

FLOODER = Path(__file__).with_name("filter_flooder.py")
CONNECTIONS = 4


async def reconnects(api: httpx.AsyncClient) -> dict[str, int]:
    exchanges = (await api.get("/status")).json()["exchanges"]
    return {e["name"]: e["reconnects"] for e in exchanges if e["name"] in VENUES}


async def test_filter_flood_does_not_starve_ingest(tmp_path: Path) -> None:
    db = tmp_path / "ohlcv.db"
    async with feedd_on_sim(tmp_path) as (sim, feedd), httpx.AsyncClient(base_url=feedd.url) as api:
        port = int(feedd.url.rsplit(":", 1)[1])
        good = GoodClient(sim)
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                await nursery.start(good.run, feedd.url)
                start = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
                await sim.sleep_until_ms(start + 4 * MINUTE_MS + 30_000)
                before = await reconnects(api)
                flood_from = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
                flooder = await trio.lowlevel.open_process(
                    [sys.executable, str(FLOODER), str(port), str(CONNECTIONS)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                try:
                    await sim.sleep_until_ms(flood_from + 6 * MINUTE_MS)
                    flood_to = sim.now_ms() // MINUTE_MS * MINUTE_MS
                    health = await api.get("/health", timeout=5)
                    after = await reconnects(api)
                finally:
                    assert flooder.stdin is not None and flooder.stdout is not None
                    await flooder.stdin.aclose()
                    counts = orjson.loads(await read_line(flooder.stdout))
                    with trio.move_on_after(10):
                        await flooder.wait()
                    if flooder.returncode is None:
                        flooder.kill()
                await sim.sleep_until_ms(flood_to + MINUTE_MS + 30_000)
                nursery.cancel_scope.cancel()
        await poll_until(
            lambda: not problems(sim, db, PLAN, start, flood_to), 20, "the store to heal"
        )
        assert feedd.alive, "feedd exited by itself"
        assert await feedd.stop() == 0
    base = good.percentiles(start, flood_from - MINUTE_MS)
    flooded = good.percentiles(flood_from, flood_to)
    print(f"close->client ms p50/p90/p99/max: before {base}, under the flood {flooded}")
    print(f"flood answers: {counts}")
    assert health.status_code == 200
    assert after == before, "a venue connection was dropped during the flood"
    assert good.complete(start, flood_to) == []
    assert flooded[2] < LATENCY_P99_S * 1000, flooded
    assert counts.get("error: too many messages", 0) > counts.get("subscribed", 0)
    assert counts.get("subscribed", 0) <= CONNECTIONS * MAX_FILTERS_PER_CLIENT
