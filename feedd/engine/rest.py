"""REST calls to one exchange within its request-weight budget, honouring Retry-After.

Requests are paced to half of the venue's published weight per minute, slowed further when
the venue's usage header says we are close to the limit, and stopped for the announced time
when the venue says to slow down: HTTP 429/418 here, or a limit the module reads in the body
(Bybit retCode 10006, its 403 ban, OKX 50011). Without a Retry-After the wait grows from 1 s,
since the venues' windows differ (OKX counts per 2 s, Bybit per 5 s, Binance per minute).
Errors come out as feedd errors; nothing here knows a venue by name.

One budget (``rest_budget``) per venue is shared by every client of that venue: live heals
spend it first, backfill jobs (``background``) only what heals leave, and parse their pages
in a worker thread, off the event loop live ingest runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import httpx
import trio

from feedd.engine.backoff import Backoff
from feedd.engine.pacing import Pacer
from feedd.engine.stats import ExchangeStats
from feedd.errors import ExchangeError, ParseError, RateLimited, TransportError
from feedd.exchanges.contract import ExchangeModule, RestRequest

T = TypeVar("T")

BUDGET_SHARE = 0.5
#: usage above this share of the budget makes us pause
USAGE_HIGH = 0.8
TIMEOUT_S = 20.0
MAX_ATTEMPTS = 6


class RestClient:
    def __init__(
        self,
        module: ExchangeModule,
        base_url: str,
        client: httpx.AsyncClient,
        stats: ExchangeStats,
        log: logging.Logger,
        *,
        pacer: Pacer | None = None,
        background: bool = False,
    ) -> None:
        self.module = module
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.stats = stats
        self.log = log
        self._pacer = pacer if pacer is not None else rest_budget(module)
        #: yield to the urgent users of the same budget (a backfill job behind live heals)
        self.background = background

    async def get(self, request: RestRequest) -> tuple[int, bytes]:
        """One request: (status, body). Raises RateLimited on 429/418, TransportError; the
        caller pauses (``call`` does)."""
        units = min(request.weight, self._pacer.burst)
        if self.background:
            await self._pacer.acquire_background(units)
        else:
            await self._pacer.acquire(units)
        self.stats.rest_requests += 1
        url = self.base_url + request.path
        query = request.query()  # encoded by the request itself: httpx would re-encode a cursor
        try:
            response = await self.client.get(f"{url}?{query}" if query else url, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise TransportError(f"{self.module.NAME} {request.path}: {exc!r}") from None
        used = self.module.used_weight(response.headers)
        if used is not None:
            self.stats.rest_weight_used = used
            budget = self.module.LIMITS.rest_weight_per_minute
            if used >= budget * USAGE_HIGH:
                # The venue counts per minute; wait out a share of the minute.
                self._pacer.pause_until(trio.current_time() + 60 * (used / budget - 0.5))
        if response.status_code in (418, 429):
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise RateLimited(str(response.status_code), "rate limited", retry_after)
        return response.status_code, response.content

    async def call(self, request: RestRequest, parse: Callable[[int, bytes], T]) -> T:
        """Request and parse, retrying transient failures with backoff; ExchangeError is final."""
        backoff = Backoff(initial=1.0, maximum=60.0)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                status, body = await self.get(request)
                if self.background:
                    # A job's pages are 1,000-1,500 rows: tens of ms of parsing that would
                    # stall live ingest on the event loop.
                    return await trio.to_thread.run_sync(parse, status, body)
                return parse(status, body)
            except RateLimited as exc:
                # From the status line or the body (parse): one place counts and pauses.
                self.stats.rest_rate_limited += 1
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                self._pacer.pause_until(trio.current_time() + delay)
                self.log.warning(
                    "%s rate limited on %s (%s); pausing REST %.1f s",
                    self.module.NAME,
                    request.path,
                    exc.code,
                    delay,
                )
                if attempt == MAX_ATTEMPTS:
                    raise
            except (TransportError, ParseError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff.next_delay()
                self.log.warning(
                    "%s %s failed (%s); retrying in %.1f s",
                    self.module.NAME,
                    request.path,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
            except ExchangeError:
                raise
        raise AssertionError("unreachable")


def rest_budget(module: ExchangeModule) -> Pacer:
    """A fresh REST budget for ``module``'s venue: a share of its published weight."""
    budget = module.LIMITS.rest_weight_per_minute
    return Pacer(budget * BUDGET_SHARE / 60, burst=max(1.0, budget * 0.05))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our default wait
    return max(0.0, min(seconds, 3600.0))
