"""``open_simulator``: start the venues' servers in their own nursery and hand back a handle
to their URLs, faults, counters and the truth; everything closes when the block exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from feedd.intervals import DAY_MS, floor_open
from feedd.sim.binance import BinanceVenue
from feedd.sim.bybit import BybitVenue
from feedd.sim.clock import SimClock, wall_clock_ms
from feedd.sim.httpserver import listener_port, open_listener, serve_http
from feedd.sim.market import Market
from feedd.sim.okx import OkxVenue
from feedd.sim.settings import SimContext, SimSettings
from feedd.sim.venue import TruthCandle, Venue

VENUE_CLASSES: dict[str, type[Venue]] = {
    cls.name: cls for cls in (BinanceVenue, BybitVenue, OkxVenue)
}


class Simulator:
    """A running simulator: ``venues[name]`` has ``ws_url``, ``rest_url``, ``faults``, ``stats``."""

    def __init__(self, ctx: SimContext, venues: dict[str, Venue]) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.market = ctx.market
        self.venues = venues

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def truth(
        self, exchange: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[TruthCandle]:
        """Closed candles (open time in range, closed by sim now) as ``exchange``'s REST
        has them."""
        return self.venues[exchange].truth(symbol, interval, start_ms, end_ms)

    async def sleep_until_ms(self, sim_ms: int) -> None:
        await self.clock.sleep_until_ms(sim_ms)

    def urls(self) -> list[dict[str, str]]:
        """Each venue's base URLs, with ``archive_url`` where it serves a bulk archive."""
        out = []
        for v in self.venues.values():
            urls = {"exchange": v.name, "ws_url": v.ws_url, "rest_url": v.rest_url}
            archive_url = getattr(v, "archive_url", None)
            if archive_url is not None:
                urls["archive_url"] = archive_url
            out.append(urls)
        return out


@asynccontextmanager
async def open_simulator(settings: SimSettings | None = None) -> AsyncIterator[Simulator]:
    settings = settings or SimSettings()
    unknown = set(settings.venues) - set(VENUE_CLASSES)
    if unknown:
        raise ValueError(f"unknown venue(s): {', '.join(sorted(unknown))}")
    start_ms = wall_clock_ms() if settings.start_ms is None else settings.start_ms
    history_start = start_ms - int(settings.history_days * 86_400_000)
    ctx = SimContext(
        settings,
        SimClock(start_ms, settings.speed),
        # Minutes older than the day before the start are never pushed live: cheap bars.
        Market(
            settings.seed,
            settings.unlisted,
            history_start,
            floor_open("1d", start_ms) - DAY_MS,
            holes=settings.holes,
        ),
    )
    venues: dict[str, Venue] = {}
    async with trio.open_nursery() as nursery:
        for index, name in enumerate(settings.venues):
            venue = VENUE_CLASSES[name](ctx)
            port = settings.port_base + index if settings.port_base else 0
            listener = await open_listener(settings.host, port)
            bound = listener_port(listener)
            venue.ws_url = f"ws://{settings.host}:{bound}"
            venue.rest_url = f"http://{settings.host}:{bound}"
            await nursery.start(serve_http, venue, listener)
            venues[name] = venue
        try:
            yield Simulator(ctx, venues)
        finally:
            nursery.cancel_scope.cancel()
