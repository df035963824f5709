"""Client abuse against feedd (its own process, so it has a core like in production): 500
``/ws`` clients that subscribe to everything and never read, clients that vanish in the middle
of a message, and a flood of API requests, all at once.

Checked: ingest keeps its latency (a well-behaved ``/ws`` client receives every closed candle,
measured from the moment the simulator sent the closing frame), no request gets a 5xx,
nothing in the log says feedd crashed, and the store equals the truth; and, on their own,
that never-reading clients are cut off with 1008, their sockets let go, and feedd still
shuts down in time.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import psutil
import trio
import trio_websocket

from chaos.abuser import RawClient, connect_silent
from chaos.harness import (
    VENUES,
    FeeddProcess,
    Plan,
    config_doc,
    crash_lines,
    handler_errors,
    poll_until,
    problems,
    read_line,
    write_config,
)
from feedd.intervals import MINUTE_MS, close_time
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.sim.symbols import universe

#: enough streams that nearly every 50 ms commit carries candles: a /ws client that reads
#: nothing falls ~20 messages a second behind and overflows its 256-message outbox soon
SYMBOLS = list(universe(1, 600))[:20]
PLAN = {name: SYMBOLS for name in VENUES}
SILENT_CLIENTS = 500
SLOW_CLIENTS = 20
VANISHING_CLIENTS = 60
FLOOD_REQUESTS = 3000
ABUSER = Path(__file__).with_name("abuser.py")
#: a closed candle reaches a /ws client at most this long (p99) after the venue sent it.
#: Measured on this 2-core machine with the abusers in their own process: 0.20-0.21 s before
#: the abuse, 0.22-0.25 s under it (0.4-1.8 s before requests in progress were capped, slow
#: clients cut without scanning /proc and the writer drained its channel per wake-up). What
#: remains is the 50 ms batch interval and full garbage collections of 0.2-0.3 s while the
#: 560 abusive connections' objects are young. The bound leaves room for a loaded CI box.
LATENCY_P99_S = 1.5
CLOSE_POLICY = 1008
#: feedd's own shutdown deadline is 10 s
SHUTDOWN_S = 12.0


class GoodClient:
    """A /ws client that reads everything and notes when each closed candle arrived."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        #: (exchange, symbol, open_time) -> seconds from the venue's closing frame to us
        self.latency: dict[tuple[str, str, int], float] = {}
        self.messages = 0

    async def run(self, url: str, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio_websocket.open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
            await ws.send_message(orjson.dumps({"op": "subscribe", "topic": "candles"}).decode())
            task_status.started()
            while True:
                message = orjson.loads(await ws.get_message())
                now = trio.current_time()
                self.messages += 1
                for c in message.get("data", []) if message["type"] == "candles" else []:
                    if c["closed"] and c["source"] == "ws":
                        sent = self.sim.clock.trio_time_at(close_time("1m", c["open_time"]))
                        key = (c["exchange"], c["symbol"], c["open_time"])
                        self.latency.setdefault(key, now - sent)

    def percentiles(self, start: int, end: int) -> tuple[int, int, int, int]:
        """p50, p90, p99 and max in ms of the candles opened in [start, end]."""
        values = sorted(v for (_, _, t), v in self.latency.items() if start <= t <= end)
        assert len(values) >= 100, f"only {len(values)} closed candles measured"
        p50, p90, p99 = (round(values[int(len(values) * q)] * 1000) for q in (0.5, 0.9, 0.99))
        return p50, p90, p99, round(values[-1] * 1000)

    def complete(self, start: int, end: int) -> list[str]:
        return [
            f"{name} {symbol} {t}"
            for name in VENUES
            for symbol in SYMBOLS
            for t in range(start, end + 1, MINUTE_MS)
            if (name, symbol, t) not in self.latency
        ]


@contextlib.asynccontextmanager
async def feedd_on_sim(
    tmp_path: Path, plan: Plan = PLAN, update_interval_s: float = 0.25
) -> AsyncIterator[tuple[Simulator, FeeddProcess]]:
    settings = SimSettings(venues=VENUES, update_interval_s=update_interval_s)
    async with open_simulator(settings) as sim:
        config = write_config(tmp_path / "config.json", config_doc(sim, plan, bootstrap_load=5))
        feedd = FeeddProcess(config, tmp_path / "feedd.log")
        try:
            await feedd.start()
            yield sim, feedd
        finally:
            await feedd.aclose()
    assert crash_lines(feedd.log_text()) == []


async def test_abusive_clients_do_not_slow_ingest(tmp_path: Path) -> None:
    """500 silent clients, 60 that vanish mid-message and 3,000 API requests at once (from
    another process): the well-behaved client gets every closed candle on time and the store
    equals the truth."""
    db = tmp_path / "ohlcv.db"
    async with feedd_on_sim(tmp_path) as (sim, feedd):
        port = int(feedd.url.rsplit(":", 1)[1])
        good = GoodClient(sim)
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                await nursery.start(good.run, feedd.url)
                start = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
                await sim.sleep_until_ms(start + 4 * MINUTE_MS + 30_000)
                abuse_from = sim.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
                abuser = await trio.lowlevel.open_process(
                    [sys.executable, str(ABUSER), str(port)]
                    + [str(n) for n in (SILENT_CLIENTS, VANISHING_CLIENTS, FLOOD_REQUESTS)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                try:
                    assert abuser.stdout is not None and abuser.stdin is not None
                    report = orjson.loads(await read_line(abuser.stdout))
                    # The silent clients stay connected, unread, while ingest is measured.
                    await sim.sleep_until_ms(abuse_from + 6 * MINUTE_MS)
                    abuse_to = sim.now_ms() // MINUTE_MS * MINUTE_MS
                    await sim.sleep_until_ms(abuse_to + MINUTE_MS + 30_000)
                    nursery.cancel_scope.cancel()
                finally:
                    if abuser.stdin is not None:
                        await abuser.stdin.aclose()
                    with trio.move_on_after(10):
                        await abuser.wait()
                    if abuser.returncode is None:
                        abuser.kill()
            await poll_until(
                lambda: not problems(sim, db, PLAN, start, abuse_to), 20, "the store to heal"
            )
            assert feedd.alive, "feedd exited by itself"
            assert await feedd.stop() == 0
    counts = {int(code): n for code, n in report["http"].items()}
    base = good.percentiles(start, abuse_from - MINUTE_MS)
    abused = good.percentiles(abuse_from, abuse_to)
    # Handlers that died of the vanishing clients (hypercorn's BusyResourceError, see the
    # report of issue #6) are reported, not failed on: the process and ingest go on.
    failed = len(handler_errors(feedd.log_text()))
    print(f"close->client ms p50/p90/p99/max: before {base}, under abuse {abused}; http {counts}")
    print(f"/ws handlers that failed with an exception: {failed}")
    assert report["silent"] == SILENT_CLIENTS
    assert good.complete(start, abuse_to) == []
    assert abuse_to - abuse_from >= 5 * MINUTE_MS, "the abuse was over too soon to measure"
    assert abused[2] < LATENCY_P99_S * 1000, abused
    assert sum(counts.values()) == FLOOD_REQUESTS
    assert not [code for code in counts if code >= 500], counts


async def test_slow_clients_are_cut_off_and_shed(tmp_path: Path) -> None:
    """Clients that never read overflow their outbox and are cut off; feedd lets go of their
    sockets and still shuts down within its 10 s deadline. (A client that reads nothing can
    see the 1008 close frame only if its socket had room for it: most see the connection
    end without one.)"""
    silent: list[RawClient] = []
    # Many streams updated every 50 ms: every commit carries a large message for each client,
    # so the kernel's socket buffers and the 256-message outbox fill within seconds.
    plan = {name: list(universe(1, 600))[:150] for name in VENUES}
    async with feedd_on_sim(tmp_path, plan, update_interval_s=0.05) as (_sim, feedd):
        port = int(feedd.url.rsplit(":", 1)[1])
        me = psutil.Process(feedd.pid)
        async with httpx.AsyncClient(base_url=feedd.url) as api:
            for _ in range(SLOW_CLIENTS):
                await connect_silent(port, silent)

            async def all_cut() -> bool:
                return bool((await api.get("/status")).json()["live_clients"] == 0)

            await poll_until(all_cut, 30, "feedd to cut the slow clients off")
        # Their handlers are done with them: the sockets are closed on feedd's side. (Not
        # a count of all descriptors: the reader's SQLite pool opens files lazily.)

        def client_sockets() -> int:
            return sum(
                1 for c in me.net_connections(kind="tcp") if c.laddr.port == port and c.raddr
            )

        await poll_until(lambda: client_sockets() == 0, 5, "the sockets to be closed")
        with trio.fail_after(SHUTDOWN_S):
            assert await feedd.stop() == 0
        codes = [await client.close_code() for client in silent]
    assert set(codes) <= {CLOSE_POLICY, None}, codes
