"""Supervise ingest: one child nursery per enabled exchange, each in its own cancel scope.

``apply`` compares a new configuration with the running one and restarts only the
exchanges whose settings changed; the others never notice. Candles already sent to the
writer are safe across a restart because the channel belongs to the writer, not to the
exchange being cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import httpx
import trio

from feedd import exchanges
from feedd.candle import Candle
from feedd.config import Config, ExchangeConfig
from feedd.engine.backfill import Backfill, StoredHistory, StoreGenerations
from feedd.engine.context import ExchangeContext, HealRequest
from feedd.engine.instruments import Discovery
from feedd.engine.pacing import Pacer
from feedd.engine.rest import RestClient, rest_budget
from feedd.engine.shard import run_shard
from feedd.engine.stats import ExchangeStats
from feedd.exchanges.contract import ExchangeModule, Stream
from feedd.monitor.taskcpu import TaskCpu

HEAL_QUEUE = 10_000
CRASH_DELAY = 5.0
log = logging.getLogger("feedd.engine")


@attrs.frozen
class ExchangePlan:
    """Everything that decides how one exchange runs; a change means a restart."""

    settings: ExchangeConfig
    intervals: tuple[str, ...]
    bootstrap_load: int


def plans(config: Config) -> dict[str, ExchangePlan]:
    return {
        ex.name: ExchangePlan(ex, config.intervals, config.bootstrap_load)
        for ex in config.enabled_exchanges()
    }


def shard_streams(
    module: ExchangeModule, symbols: Sequence[str], intervals: Sequence[str]
) -> list[tuple[Stream, ...]]:
    """The streams of ``symbols`` cut into connections of the venue's size."""
    streams = [Stream(s, i) for s in symbols for i in intervals]
    size = module.LIMITS.streams_per_connection
    return [tuple(streams[n : n + size]) for n in range(0, len(streams), size)]


class _Running:
    def __init__(self, plan: ExchangePlan, scope: trio.CancelScope, done: trio.Event) -> None:
        self.plan = plan
        self.scope = scope
        self.done = done


class Supervisor:
    def __init__(
        self,
        candles_send: trio.MemorySendChannel[list[Candle]],
        history: StoredHistory,
        http: httpx.AsyncClient,
        cpu: TaskCpu | None = None,
        store: StoreGenerations | None = None,
        *,
        collect: bool = True,
    ) -> None:
        self._candles_send = candles_send
        #: False on an API node: no exchange ever starts, whatever config is applied
        self._collect = collect
        self._store = store
        #: each running exchange's backfill, to queue heals for all its streams
        self._backfills: dict[str, Backfill] = {}
        self._cpu = cpu
        self._history = history
        self._http = http
        self._nursery: trio.Nursery | None = None
        self._running: dict[str, _Running] = {}
        self._lock = trio.Lock()
        self.stats: dict[str, ExchangeStats] = {}
        #: one REST budget per venue, kept across restarts and shared with backfill jobs
        self._budgets: dict[str, Pacer] = {}

    def budget(self, name: str) -> Pacer:
        """The REST budget of venue ``name`` (made on first use, whether it runs or not)."""
        pacer = self._budgets.get(name)
        if pacer is None:
            pacer = self._budgets[name] = rest_budget(exchanges.get(name))
        return pacer

    async def run(
        self, config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ingest for ``config`` until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._store is not None:
                nursery.start_soon(self._rebootstrap_when_recreated, self._store)
            await self.apply(config)
            task_status.started()
            await trio.sleep_forever()

    async def apply(self, config: Config, *, restart_all: bool = False) -> list[str]:
        """Start, stop or restart exchanges so that ``config`` runs; returns what changed
        (with ``restart_all``, every exchange that runs or should run)."""
        assert self._nursery is not None, "apply() before run()"
        async with self._lock:
            wanted = plans(config) if self._collect else {}
            changed = [
                name
                for name in sorted(set(wanted) | set(self._running))
                if restart_all
                or name not in wanted
                or name not in self._running
                or self._running[name].plan != wanted[name]
            ]
            for name in changed:
                running = self._running.pop(name, None)
                if running is not None:
                    running.scope.cancel()
                    await running.done.wait()
                    self.stats[name].state = "stopped"
            for name in changed:
                if name in wanted:
                    await self._nursery.start(self._run_exchange, wanted[name])
            for name in config.exchanges:
                self.stats.setdefault(name, ExchangeStats(name))
                if name not in wanted:
                    self.stats[name].state = "disabled"
            return changed

    async def _rebootstrap_when_recreated(self, store: StoreGenerations) -> None:
        """A store made anew has lost every candle: bootstrap every stream again."""
        seen = store.generation
        while True:
            seen = await store.wait_recreated(seen)
            for name, backfill in sorted(self._backfills.items()):
                streams = backfill.rebootstrap()
                log.warning("%s: store recreated, backfilling %d stream(s) again", name, streams)

    async def _run_exchange(
        self, plan: ExchangePlan, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        name = plan.settings.name
        module = exchanges.get(name)
        stats = ExchangeStats(name)
        self.stats[name] = stats
        done = trio.Event()
        scope = trio.CancelScope()
        self._running[name] = _Running(plan, scope, done)
        task = trio.lowlevel.current_task()
        if self._cpu is not None:
            self._cpu.register(task, name)
        task_status.started()
        try:
            with scope:
                while True:
                    try:
                        await self._serve(module, plan, stats)
                    except Exception:
                        # A bug in one exchange's tasks must not take ingest of the others
                        # down: log it loudly and start that exchange again.
                        log.exception("%s ingest crashed; restarting in %g s", name, CRASH_DELAY)
                        stats.state = "crashed"
                        await trio.sleep(CRASH_DELAY)
        finally:
            self._backfills.pop(name, None)
            if self._cpu is not None:
                self._cpu.unregister(task)
            stats.connections = 0
            stats.streams_subscribed = 0
            stats.backfilling.clear()
            done.set()

    async def _serve(
        self,
        module: ExchangeModule,
        plan: ExchangePlan,
        stats: ExchangeStats,
    ) -> None:
        settings = plan.settings
        heal_send, heal_recv = trio.open_memory_channel[HealRequest](HEAL_QUEUE)
        candles_send = self._candles_send.clone()
        lifetime = settings.connection_lifetime or module.LIMITS.connection_lifetime_s
        ctx = ExchangeContext(
            module=module,
            ws_base=settings.ws_url or module.DEFAULT_WS_URL,
            rest_base=settings.rest_url or module.DEFAULT_REST_URL,
            candles_send=candles_send,
            heal_send=heal_send,
            stats=stats,
            silence_timeout=settings.silence_timeout or module.SILENCE_TIMEOUT_S,
            lifetime=lifetime,
            connect_pacer=Pacer(module.LIMITS.connects_per_second),
            log=log,
        )
        store = self._store
        if store is not None:
            ctx.store_emptied = lambda: store.emptied
        rest = RestClient(
            module, ctx.rest_base, self._http, stats, log, pacer=self.budget(module.NAME)
        )
        discovery = Discovery(
            ctx, rest, settings.symbols, plan.intervals, settings.instruments_refresh
        )
        listed_send, listed_recv = trio.open_memory_channel[tuple[str, ...]](16)
        async with candles_send, heal_send, trio.open_nursery() as nursery:
            stats.state = "discovering"
            shards = shard_streams(module, await discovery.initial(), plan.intervals)
            log.info(
                "%s starting: %d stream(s) on %d connection(s)",
                module.NAME,
                sum(map(len, shards)),
                len(shards),
            )
            backfill = Backfill(ctx, rest, self._history, plan.bootstrap_load)
            all_streams = tuple(s for shard in shards for s in shard)
            await nursery.start(backfill.run, all_streams, heal_recv)
            self._backfills[module.NAME] = backfill
            for streams in shards:
                await nursery.start(run_shard, ctx, streams)
            stats.state = "connecting"
            nursery.start_soon(discovery.run, listed_send)
            async with listed_recv:
                async for symbols in listed_recv:
                    # Newly listed: their own shards, bootstrapped from REST on connect.
                    for streams in shard_streams(module, symbols, plan.intervals):
                        await nursery.start(run_shard, ctx, streams)
