"""The simulator faults the chaos suite added: oversized frames, REST errors under a chosen
status, and REST faults aimed at one endpoint."""

from __future__ import annotations

import httpx
import orjson
import trio_websocket

from feedd.sim.app import open_simulator
from feedd.sim.settings import SimSettings

BN = "binance_futures"


async def test_oversized_frame_is_one_well_formed_message() -> None:
    async with open_simulator(SimSettings(venues=(BN,))) as sim:
        url = sim.venues[BN].ws_url + "/market/ws/btcusdt@kline_1m"
        async with trio_websocket.open_websocket_url(url, max_message_size=8 << 20) as ws:
            assert sim.venues[BN].faults.send_oversized(3 << 20) == 1
            while len(message := await ws.get_message()) < 1 << 20:
                pass  # kline updates queued before it
    assert len(message) == 3 << 20
    assert set(orjson.loads(message)) == {"pad"}
    assert sim.venues[BN].stats["oversized"] == 1


async def test_rest_error_status_and_path() -> None:
    async with open_simulator(SimSettings(venues=(BN,))) as sim, httpx.AsyncClient() as http:
        faults, base = sim.venues[BN].faults, sim.venues[BN].rest_url
        klines = base + "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=2"
        faults.rest_error(1, status=200, path="/fapi/v1/klines")
        faults.rest_error(1)
        # The first fault waits for a klines request; the second takes any request.
        assert (await http.get(base + "/fapi/v1/time")).status_code == 503
        first = await http.get(klines)
        assert first.status_code == 200 and first.json()["code"] == -1001
        assert isinstance((await http.get(klines)).json(), list)  # faults used up
