"""Browser-test harness: the simulator and feedd run by ``trio.run`` in a background thread
(Playwright's sync API cannot run inside trio's loop), Chromium driven from the test thread.

``LiveFeedd`` starts both, hands out the URL, can stop feedd and start it again on the same
port (the sim keeps running) to exercise the dashboard's reconnect, and stops everything on
exit, joining the thread so nothing leaks into later tests.
"""

from __future__ import annotations

import functools
import logging
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from e2e import feedd_config

from feedd import config
from feedd.candle import Candle, Source
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.clock import DEFAULT_START_MS
from feedd.sim.settings import SimSettings
from feedd.store.database import Database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

#: console messages that are expected while feedd is deliberately unreachable
OFFLINE_NOISE = ("ERR_CONNECTION_REFUSED", "WebSocket connection to", "Failed to load resource")


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not Path(CHROMIUM).exists():
        return (
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Run `make test` (it calls scripts/browser_setup.sh) or `apt-get install -y chromium`."
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: pip install -e '.[dev]'"
    return None


class LiveFeedd:
    """Simulator + feedd in a background trio thread."""

    def __init__(
        self,
        tmp_path: Path,
        symbols: dict[str, list[str]],
        sim: SimSettings | None = None,
        **extra: Any,
    ) -> None:
        self.tmp_path = tmp_path
        self.symbols = symbols
        self.sim_settings = sim or SimSettings(venues=tuple(symbols))
        self.extra = extra
        self.config_path = tmp_path / "config.json"
        self.db = tmp_path / "ohlcv.db"
        self.url = ""
        self.sim: Simulator | None = None
        self.service: Service | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._done: trio.Event | None = None
        self._want_feedd: trio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LiveFeedd:
        # As the feedd CLI does: info lines reach the log ring (the dashboard's terminal).
        self._log_level = logging.getLogger("feedd").level
        logging.getLogger("feedd").setLevel(logging.INFO)
        self._thread = threading.Thread(target=self._run, name="feedd-under-test", daemon=True)
        self._thread.start()
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._shutdown, trio_token=self._token)
        assert self._thread is not None
        self._thread.join(STOP_TIMEOUT_S)
        logging.getLogger("feedd").setLevel(self._log_level)
        if self._thread.is_alive():
            raise RuntimeError("feedd/simulator thread did not stop within the timeout")
        if self._error is not None and exc[0] is None:
            raise RuntimeError("feedd/simulator thread failed") from self._error

    def _wait_ready(self) -> None:
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("feedd did not start within the timeout")
        if self._error is not None:
            raise RuntimeError("feedd/simulator failed to start") from self._error
        self._ready.clear()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._done = trio.Event()
        async with open_simulator(self.sim_settings) as sim:
            self.sim = sim
            config.save(self.config_path, feedd_config(sim, self.symbols, **self.extra))
            port = 0
            while True:
                # One round runs feedd until stop_feedd() or exit; start_feedd() begins the
                # next round on the same port, from the config file the API may have changed.
                cfg = config.load(self.config_path).config
                if port:
                    cfg = attrs.evolve(cfg, port=port)
                async with trio.open_nursery() as nursery:
                    service: Service = await nursery.start(
                        functools.partial(run_service, cfg, self.db, config_path=self.config_path)
                    )
                    self.service = service
                    self.url = service.url
                    port = urlsplit(self.url).port or 0
                    self._ready.set()
                # run_service returned: feedd has shut down and closed its port
                self.service = None
                self._want_feedd = trio.Event()
                self._ready.set()
                if self._done.is_set():
                    break
                await self._want_feedd.wait()
                if self._done.is_set():
                    break

    def _shutdown(self) -> None:
        assert self._done is not None
        self._done.set()
        if self.service is not None:
            self.service.stop.set()
        if self._want_feedd is not None:
            self._want_feedd.set()

    # ---- controls used by tests ------------------------------------------------------------

    def stop_feedd(self) -> None:
        """Stop feedd (the simulator keeps running) and wait until its port is closed."""
        assert self._token is not None and self.service is not None
        trio.from_thread.run_sync(self.service.stop.set, trio_token=self._token)
        self._wait_ready()

    def in_trio(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` (synchronous) in the trio thread, e.g. a simulator fault."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def start_feedd(self) -> None:
        """Start feedd again on the same port and wait until it serves."""
        assert self._token is not None and self._want_feedd is not None
        trio.from_thread.run_sync(self._want_feedd.set, trio_token=self._token)
        self._wait_ready()


# ---- history with a known hole, written before feedd starts --------------------------------

#: the simulator's clock at start (sim time runs a minute per real second from there)
SIM_START_MS = DEFAULT_START_MS
MINUTE_MS = 60_000


@attrs.frozen
class Hole:
    start: int
    end: int

    @property
    def candles(self) -> int:
        return (self.end - self.start) // MINUTE_MS + 1


def candle(exchange: str, symbol: str, t: int) -> Candle:
    prices = ("100.5", "101", "100", "100.75")
    return Candle(exchange, symbol, "1m", t, *prices, "3", "302", 7, True, Source.REST)


def write_history_with_hole(
    db: Path, exchange: str, symbol: str, minutes: int, hole: tuple[int, int]
) -> Hole:
    """Closed 1m candles of ``symbol`` for the ``minutes`` before the simulator's start, except
    the minutes ``hole`` (counted back from the start, inclusive) which are left out. feedd's
    bootstrap and its session heal only reach back to the newest stored candle, so the hole
    stays until something backfills it."""
    older, newer = hole
    first, last = SIM_START_MS - older * MINUTE_MS, SIM_START_MS - newer * MINUTE_MS
    missing = range(first, last + 1, MINUTE_MS)
    store = Database.open(db)
    try:
        store.write(
            [
                candle(exchange, symbol, t)
                for t in range(SIM_START_MS - minutes * MINUTE_MS, SIM_START_MS, MINUTE_MS)
                if t not in missing
            ]
        )
    finally:
        store.close()
    return Hole(missing[0], missing[-1])
