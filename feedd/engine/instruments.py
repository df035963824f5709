"""Instrument discovery: the venue's tradable USDT perpetuals, fetched and refreshed.

Configured symbols the venue does not list are reported per symbol and skipped; the rest
flow. A configured symbol listed later is sent to the exchange's runner, which starts a
shard for it without disturbing the others. A listed symbol that disappears is reported;
its stream is left to the silence watchdog.
"""

from __future__ import annotations

import time

import trio

from feedd.engine.context import ExchangeContext, stream_key
from feedd.engine.rest import RestClient
from feedd.engine.stats import StreamState
from feedd.errors import ExchangeError, FeeddError
from feedd.exchanges.contract import ExchangeModule, Stream

#: a venue with more pages than this is answering nonsense
MAX_PAGES = 100
#: how long start-up waits for the list before collecting every configured symbol
INITIAL_TIMEOUT_S = 15.0
#: after a failed fetch, try again this soon
RETRY_S = 30.0


async def fetch_instruments(module: ExchangeModule, rest: RestClient) -> frozenset[str]:
    """Every tradable USDT perpetual the venue lists (all pages)."""
    symbols: list[str] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await rest.call(module.instruments_request(cursor), module.parse_instruments)
        symbols.extend(page.symbols)
        if not page.next_cursor:
            return frozenset(symbols)
        cursor = page.next_cursor
    raise ExchangeError("instruments", f"more than {MAX_PAGES} pages of instruments")


class Discovery:
    def __init__(
        self,
        ctx: ExchangeContext,
        rest: RestClient,
        configured: tuple[str, ...],
        intervals: tuple[str, ...],
        refresh_s: float,
    ) -> None:
        self.ctx = ctx
        self.rest = rest
        self.configured = configured
        self.intervals = intervals
        self.refresh_s = refresh_s
        #: configured symbols being collected
        self.active: set[str] = set()
        self._known = False

    async def fetch(self) -> frozenset[str]:
        listed = await fetch_instruments(self.ctx.module, self.rest)
        self.ctx.stats.listed = listed
        self.ctx.stats.listed_at_ms = int(time.time() * 1000)
        return listed

    async def initial(self) -> tuple[str, ...]:
        """The configured symbols to collect now; all of them when the list is unavailable."""
        listed: frozenset[str] | None = None
        with trio.move_on_after(INITIAL_TIMEOUT_S):
            try:
                listed = await self.fetch()
            except FeeddError as exc:
                self.ctx.log.warning(
                    "%s instrument list unavailable (%s); collecting every configured symbol",
                    self.ctx.module.NAME,
                    exc,
                )
        if listed is None:
            self.active = set(self.configured)
        else:
            self._known = True
            self._apply(listed)
        return tuple(s for s in self.configured if s in self.active)

    async def run(self, listed_send: trio.MemorySendChannel[tuple[str, ...]]) -> None:
        """Refresh forever, sending configured symbols that became listed."""
        async with listed_send:
            while True:
                await trio.sleep(self.refresh_s if self._known else RETRY_S)
                try:
                    listed = await self.fetch()
                except FeeddError as exc:
                    self._known = False
                    self.ctx.log.warning(
                        "%s instrument refresh failed: %s", self.ctx.module.NAME, exc
                    )
                    continue
                self._known = True
                added = self._apply(listed)
                if added:
                    await listed_send.send(added)

    def _apply(self, listed: frozenset[str]) -> tuple[str, ...]:
        """Update states from a fresh list; returns configured symbols newly listed."""
        added = tuple(s for s in self.configured if s in listed and s not in self.active)
        for symbol in self.configured:
            if symbol in listed:
                continue
            keys = [stream_key(Stream(symbol, interval)) for interval in self.intervals]
            if self.ctx.stats.stream_states.get(keys[0]) != StreamState.UNLISTED:
                self.ctx.log.warning(
                    "%s does not list %s; skipped until it does", self.ctx.module.NAME, symbol
                )
            for key in keys:
                self.ctx.stats.set_stream(key, StreamState.UNLISTED, "not listed by the exchange")
        for symbol in added:
            self.ctx.log.info("%s lists %s: collecting it", self.ctx.module.NAME, symbol)
        self.active.update(added)
        return added
