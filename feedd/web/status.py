"""What /status, /exchanges and the /ws status topic report: system, writer and workers.

Built from the monitor's latest sample and the engine's live counters, so a request costs
no system calls and no database query.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

from feedd import __version__, exchanges
from feedd.candle import Candle
from feedd.config import ExchangeConfig
from feedd.engine.context import stream_key
from feedd.engine.stats import ExchangeStats, StreamState
from feedd.exchanges.contract import Stream
from feedd.monitor.system import ExchangeRates

if TYPE_CHECKING:
    from feedd.web.state import AppState

#: stream states that make an exchange "degraded"
_TROUBLE = {StreamState.SILENT, StreamState.REJECTED, StreamState.UNLISTED}
_WRITER_FIELDS = (
    "received",
    "committed",
    "batches",
    "pending",
    "held_limit",
    "last_batch_latency_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "healthy",
    "last_error",
    "retries",
    "rejected",
    "pruned",
    "dropped",
    "recreated",
)


#: the state of an enabled exchange (and its streams) on an API node: collectors collect it
REMOTE = "remote"


def exchange_settings(state: AppState, name: str) -> ExchangeConfig:
    configured = state.config.exchanges.get(name)
    return configured or ExchangeConfig(name, symbols=(), enabled=False)


def worker_state(settings: ExchangeConfig, stats: ExchangeStats | None) -> tuple[str, str]:
    """(state, health) of one exchange: health is healthy, degraded, down or disabled."""
    if not settings.enabled:
        return "disabled", "disabled"
    if stats is None or stats.state in {"starting", "stopped", "disabled"}:
        return "starting", "degraded"
    if stats.state == "crashed":
        return "crashed", "down"
    if stats.state in {"discovering", "connecting"} and stats.connections == 0:
        return stats.state, "degraded"
    if stats.connections == 0:
        return "reconnecting", "down"
    if any(s in _TROUBLE for s in stats.stream_states.values()):
        return "degraded", "degraded"
    return "live", "healthy"


def symbol_rows(
    state: AppState, settings: ExchangeConfig, stats: ExchangeStats | None
) -> list[dict[str, Any]]:
    rows = []
    for symbol in settings.symbols:
        for interval in state.config.intervals:
            key = stream_key(Stream(symbol, interval))
            stream_state = "disabled"
            error = progress = None
            if settings.enabled and state.security.role == "api":
                stream_state = REMOTE
            elif settings.enabled and stats is not None:
                stream_state = str(stats.stream_states.get(key, StreamState.PENDING))
                error = stats.stream_errors.get(key)
                progress = stats.backfilling.get(key)
                if progress is not None and stream_state not in {"rejected", "unlisted"}:
                    stream_state = "backfilling"
            series = (settings.name, symbol, interval)
            rows.append(
                {
                    "symbol": symbol,
                    "interval": interval,
                    "state": stream_state,
                    "error": error,
                    "backfill_progress": progress,
                    "last": _last_price(state.hub.last_price(series)),
                }
            )
    return rows


def worker(state: AppState, name: str, *, symbols: bool = True) -> dict[str, Any]:
    settings = exchange_settings(state, name)
    stats = state.supervisor.stats.get(name)
    worker_state_, health = worker_state(settings, stats)
    if state.security.role == "api" and settings.enabled:
        # An API node collects nothing: the collectors' states are in ``cluster``.
        worker_state_, health = REMOTE, "disabled"
    out: dict[str, Any] = {
        "name": name,
        "enabled": settings.enabled,
        "state": worker_state_,
        "health": health,
        "streams": len(settings.symbols) * len(state.config.intervals),
    }
    if stats is not None and settings.enabled:
        counters = stats.snapshot()
        for key in ("stream_states", "stream_errors", "backfilling", "name", "state"):
            counters.pop(key)
        out.update(counters)
        out["backfill_pending"] = stats.backfill_pending
    else:
        out.update(connections=0, streams_subscribed=0, last_message_age_s=None)
    rates = state.monitor.rates.get(name, ExchangeRates()) if settings.enabled else ExchangeRates()
    out.update(attrs.asdict(rates))
    if symbols:
        out["symbols"] = symbol_rows(state, settings, stats)
    out["backfill_jobs"] = state.jobs.active().get(name, []) if state.jobs else []
    return out


def status_document(state: AppState) -> dict[str, Any]:
    writer = state.writer.stats
    system = dict(state.monitor.system)
    system["uptime_s"] = round(time.time() - state.started_at, 1)
    return {
        "time": int(time.time() * 1000),
        "version": __version__,
        "system": system,
        "writer": {key: getattr(writer, key) for key in _WRITER_FIELDS},
        "live_clients": len(state.hub.clients),
        "nats": None if state.publisher is None else attrs.asdict(state.publisher.stats),
        "exchanges": [worker(state, name) for name in sorted(exchanges.REGISTRY)],
        "role": state.security.role,
        "cluster": state.cluster.document() if state.cluster is not None else [],
    }


def node_status(state: AppState) -> dict[str, Any]:
    """What this node's heartbeat says of it: health, each exchange it collects, the writer."""
    writer = state.writer.stats
    collected = {}
    for name in sorted(exchanges.REGISTRY):
        full = worker(state, name, symbols=False)
        if full["enabled"] and state.security.role != "api":
            collected[name] = {
                key: full.get(key)
                for key in ("state", "health", "connections", "streams", "streams_subscribed")
            }
    healthy = writer.healthy and all(ex["health"] == "healthy" for ex in collected.values())
    return {
        "health": "healthy" if healthy else "degraded",
        "exchanges": collected,
        "writer": {"healthy": writer.healthy, "last_error": writer.last_error},
    }


def exchanges_document(state: AppState) -> dict[str, Any]:
    out = []
    for name in sorted(exchanges.REGISTRY):
        settings = exchange_settings(state, name)
        full = worker(state, name, symbols=False)
        out.append(
            {
                "name": name,
                "enabled": settings.enabled,
                "symbols": list(settings.symbols),
                "state": full["state"],
                "health": full["health"],
                "connections": full["connections"],
                "streams": full["streams"],
            }
        )
    return {"exchanges": out}


def _last_price(last: tuple[Candle, int] | None) -> dict[str, Any] | None:
    if last is None:
        return None
    candle, committed_ms = last
    return {
        "open_time": candle.open_time,
        "close": float(candle.close),
        "volume": float(candle.volume),
        "closed": candle.closed,
        "time": committed_ms,
    }
