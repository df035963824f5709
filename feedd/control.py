"""Runtime control: change the configuration while feedd runs, one change at a time.

Every change is validated whole, saved atomically (when feedd runs from a file), then
applied by the supervisor, which restarts only the exchanges whose settings changed. A
change that fails validation leaves both the file and the running service untouched.
Changes are carried out by the controller's own task (``run``), never by the caller's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from feedd import config as config_module
from feedd import exchanges
from feedd.changes import ChangeQueue
from feedd.config import Config
from feedd.engine.instruments import fetch_instruments
from feedd.engine.rest import RestClient
from feedd.engine.stats import ExchangeStats
from feedd.engine.supervisor import Supervisor
from feedd.errors import ConfigError, FeeddError, StoreError, TransportError
from feedd.store.writer import Writer
from feedd.symbols import is_symbol

if TYPE_CHECKING:
    from feedd.jobs.manager import JobManager

log = logging.getLogger("feedd.control")

#: keys saved by a change but read only at process start
STARTUP_KEYS = (
    "host",
    "port",
    "storage",
    "api_token",
    "allowed_hosts",
    "batch_interval",
    "max_records",
    "role",
    "publish",
)
#: an instrument list fetched on demand (for an exchange not running) stays fresh this long
LISTING_TTL_S = 600.0
LISTING_TIMEOUT_S = 10.0
#: after a failed fetch the failure is the answer this long: an unreachable venue would
#: otherwise hold a request slot for LISTING_TIMEOUT_S at every request
LISTING_FAILURE_TTL_S = 30.0


@attrs.frozen
class Applied:
    restarted: tuple[str, ...]
    restart_required: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@attrs.frozen
class Listing:
    symbols: frozenset[str]
    fetched_at_ms: int


@attrs.frozen
class _Failure:
    message: str
    #: the REST base asked: a changed rest_url is asked at once
    base: str
    #: trio.current_time() after which the venue is asked again
    until: float


class Controller:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        supervisor: Supervisor,
        writer: Writer,
        http: httpx.AsyncClient,
    ) -> None:
        #: the configuration that runs now (what /config shows)
        self.config = config
        #: the configuration ingest started from; startup-only keys compare against it
        self.started_with = config
        self.config_path = config_path
        self.supervisor = supervisor
        self.writer = writer
        #: the backfill jobs, cancelled and forgotten by a delete of the database (set by the
        #: service once made: they read the configuration through this controller)
        self.jobs: JobManager | None = None
        self._http = http
        self._changes = ChangeQueue()
        self._listings: dict[str, Listing] = {}
        self._failures: dict[str, _Failure] = {}
        #: one fetch per venue at a time: requests arriving meanwhile take its answer
        self._fetching: dict[str, trio.Lock] = {}

    async def run(
        self,
        stop: trio.Event | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Carry out changes until ``stop`` is set; every change method needs this task.

        From ``stop`` on, a change in progress is interrupted and callers are answered that
        feedd is shutting down (ingest stops right after: finishing it would be moot)."""
        await self._changes.run(stop, task_status=task_status)

    @property
    def pending(self) -> int:
        """Changes handed over and not carried out yet (queued or in progress)."""
        return self._changes.pending

    async def replace(self, new: Config, warnings: Sequence[str] = ()) -> Applied:
        """Save ``new`` and run it; only exchanges whose settings changed restart."""
        return await self._changes.submit(functools.partial(self._replace, new, tuple(warnings)))

    async def set_symbols(
        self,
        exchange: str,
        symbols: Iterable[str] | None = None,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[tuple[str, ...], Applied]:
        """Replace an exchange's symbols, or add/remove some; returns the new list."""
        self._exchange(exchange)
        given = None if symbols is None else tuple(symbols)
        added, removed = tuple(add), set(remove)
        # Asked before the hand-over: a slow venue must not hold up the changes queued after.
        await self._check_listed(exchange, given or (), "symbols")
        await self._check_listed(exchange, added, "add")

        async def change() -> tuple[tuple[str, ...], Applied]:
            current = self._exchange(exchange)
            base = current.symbols if given is None else given
            new_symbols = tuple(dict.fromkeys(s for s in (*base, *added) if s not in removed))
            data = self.config.to_json()
            data["exchanges"].setdefault(exchange, {"enabled": current.enabled})
            data["exchanges"][exchange]["symbols"] = list(new_symbols)
            loaded = config_module.parse(data)
            applied = await self._replace(loaded.config, loaded.warnings)
            return loaded.config.exchanges[exchange].symbols, applied

        return await self._changes.submit(change)

    async def toggle(self, exchange: str, enabled: bool | None = None) -> tuple[bool, Applied]:
        """Enable or disable an exchange (``None``: flip); returns the new state."""
        self._exchange(exchange)

        async def change() -> tuple[bool, Applied]:
            # Read when carried out: flips queued together each see the one before.
            current = self._exchange(exchange)
            target = (not current.enabled) if enabled is None else enabled
            data = self.config.to_json()
            data["exchanges"].setdefault(exchange, {"symbols": list(current.symbols)})
            data["exchanges"][exchange]["enabled"] = target
            loaded = config_module.parse(data)
            return target, await self._replace(loaded.config, loaded.warnings)

        return await self._changes.submit(change)

    async def restart(self) -> Applied:
        """Re-read the config file and restart every exchange from it."""
        return await self._changes.submit(self._restart)

    async def delete_database(self) -> None:
        """Delete every stored candle while ingest runs; the writer pauses for it."""
        await self._changes.submit(self._delete_database)

    async def listing(self, exchange: str) -> Listing:
        """The venue's tradable symbols: from the running discovery, or fetched now.

        A failed fetch is the answer (TransportError etc.) for ``LISTING_FAILURE_TTL_S``;
        requests arriving during a fetch wait for it rather than start their own."""
        stats = self.supervisor.stats.get(exchange)
        if stats is not None and stats.listed is not None and stats.listed_at_ms is not None:
            return Listing(stats.listed, stats.listed_at_ms)
        async with self._fetching.setdefault(exchange, trio.Lock()):
            return await self._fetch_listing(exchange)

    async def _fetch_listing(self, exchange: str) -> Listing:
        cached = self._listings.get(exchange)
        if cached is not None and time.time() * 1000 - cached.fetched_at_ms < LISTING_TTL_S * 1000:
            return cached
        module = exchanges.get(exchange)
        settings = self.config.exchanges.get(exchange)
        base = (settings.rest_url if settings else None) or module.DEFAULT_REST_URL
        failure = self._failures.get(exchange)
        now = trio.current_time()
        if failure is not None and failure.base == base and now < failure.until:
            raise TransportError(f"{failure.message} (asked again in {failure.until - now:.0f} s)")
        # The venue's one budget, as heals and jobs draw from: a venue that asked us to slow
        # down (a 429's Retry-After) is not asked for its list meanwhile.
        stats = self.supervisor.stats.get(exchange) or ExchangeStats(exchange)
        pacer = self.supervisor.budget(exchange)
        rest = RestClient(module, base, self._http, stats, log, pacer=pacer)
        try:
            with trio.move_on_after(LISTING_TIMEOUT_S):
                listing = Listing(await fetch_instruments(module, rest), int(time.time() * 1000))
                self._listings[exchange] = listing
                self._failures.pop(exchange, None)
                return listing
            raise TransportError(
                f"{exchange} did not send its instrument list within {LISTING_TIMEOUT_S:g} s"
            )
        except FeeddError as exc:
            until = trio.current_time() + LISTING_FAILURE_TTL_S
            self._failures[exchange] = _Failure(str(exc), base, until)
            raise

    def _exchange(self, exchange: str) -> config_module.ExchangeConfig:
        if exchange not in exchanges.REGISTRY:
            known = ", ".join(sorted(exchanges.REGISTRY))
            raise ConfigError("exchange", f"unknown exchange {exchange!r} (known: {known})")
        current = self.config.exchanges.get(exchange)
        return current or config_module.ExchangeConfig(exchange, symbols=(), enabled=False)

    async def _check_listed(self, exchange: str, symbols: Sequence[str], field: str) -> None:
        """Refuse symbols the venue does not list, when its list can be had."""
        for index, symbol in enumerate(symbols):
            if not is_symbol(symbol):
                raise ConfigError(
                    f"{field}[{index}]", f"malformed symbol {symbol!r} (expected e.g. BTCUSDT)"
                )
        if not symbols:
            return
        try:
            listed = (await self.listing(exchange)).symbols
        except FeeddError as exc:
            log.warning("%s instrument list unavailable, symbols not checked: %s", exchange, exc)
            return
        for index, symbol in enumerate(symbols):
            if symbol not in listed:
                raise ConfigError(f"{field}[{index}]", f"{exchange} does not list {symbol}")

    async def _restart(self) -> Applied:
        warnings: tuple[str, ...] = ()
        if self.config_path is None:
            new = self.config
        else:
            loaded = config_module.load(self.config_path)
            new, warnings = loaded.config, loaded.warnings
        restarted = await self.supervisor.apply(new, restart_all=True)
        self.config = new
        log.info("ingest restarted: %s", ", ".join(restarted) or "nothing enabled")
        return Applied(tuple(restarted), self._startup_changes(new), warnings)

    async def _delete_database(self) -> None:
        log.warning("deleting every stored candle and backfill job (requested over the API)")
        if self.jobs is not None:
            # A job left running would refill the database it was asked to empty, and a
            # finished one would list rows that are gone.
            await self.jobs.forget_all()
        await self.writer.wipe()

    async def _replace(self, new: Config, warnings: tuple[str, ...]) -> Applied:
        if self.config_path is not None:
            try:
                # Abandoned only when the service stops (nothing else cancels this task): a
                # hung disk must not hold up the shutdown.
                await trio.to_thread.run_sync(
                    config_module.save, self.config_path, new, abandon_on_cancel=True
                )
            except OSError as exc:
                raise StoreError(
                    f"cannot save the config file {self.config_path}: {exc.strerror or exc}"
                ) from None
        restarted = await self.supervisor.apply(new)
        self.config = new
        if restarted:
            log.info("configuration applied; restarted %s", ", ".join(restarted))
        else:
            log.info("configuration applied; no exchange needed a restart")
        return Applied(tuple(restarted), self._startup_changes(new), warnings)

    def _startup_changes(self, new: Config) -> tuple[str, ...]:
        return tuple(
            key for key in STARTUP_KEYS if getattr(new, key) != getattr(self.started_with, key)
        )
