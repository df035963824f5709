"""``/metrics`` in Prometheus text format: feedd's counters, gauges and histograms read from
live state at scrape time, next to the client library's ``process_*`` and ``python_*`` ones.

Counters stay counters (rates and shares are ``rate()``'s job), times are timestamps in
seconds since the epoch rather than ages, and every metric is listed in docs/API.md.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from typing import Literal

import attrs
from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feedd import __version__
from feedd.engine.stats import StreamState
from feedd.monitor.histogram import Histogram
from feedd.store.state import WriterStats
from feedd.web.state import AppState

#: the text format generate_latest writes (the library's CONTENT_TYPE_LATEST names a newer one)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EXCHANGE = ["exchange"]
SERIES = ["exchange", "symbol", "interval"]

#: ExchangeStats counters, exported as ``feedd_exchange_<attribute>_total{exchange}``
EXCHANGE_COUNTERS: dict[str, str] = {
    "messages": "WebSocket messages received.",
    "candles": "Candle updates parsed from WebSocket messages.",
    "reconnects": "WebSocket reconnects after a failure.",
    "rotations": "Planned connection rotations (before the venue's forced disconnect).",
    "gaps_healed": "Gaps filled over REST after a reconnect or a missed close.",
    "parse_errors": "Frames that did not parse.",
    "ignored_frames": "Well-formed frames of no use to feedd (other channels, unsubscribe acks).",
    "exchange_errors": "Error messages from the exchange.",
    "rest_requests": "REST requests sent.",
    "rest_candles": "Closed candles fetched over REST.",
    "rest_rate_limited": "REST answers asking to slow down (429/418 or a limit code in a body).",
}

#: ExchangeStats gauges, exported as ``feedd_exchange_<attribute>{exchange}``
EXCHANGE_GAUGES: dict[str, str] = {
    "connections": "Open WebSocket connections.",
    "streams_subscribed": "Streams the exchange acknowledged.",
    "rest_weight_used": "REST weight used in the venue's current window, as the venue reports it.",
    "backfill_pending": "Streams waiting for a REST backfill.",
}


@attrs.frozen
class Scrape:
    """What one scrape reads, taken once: the state and the snapshots that cost to make."""

    state: AppState
    writer: WriterStats
    system: dict[str, object]


@attrs.frozen
class Scalar:
    """One process-wide figure: ``read`` returns None when it is not known (not exported)."""

    kind: Literal["counter", "gauge"]
    #: a counter's name without ``_total`` (the exposition adds it)
    name: str
    help: str
    read: Callable[[Scrape], float | None]


def counter(name: str, help: str, read: Callable[[Scrape], float | None]) -> Scalar:
    return Scalar("counter", name, help, read)


def gauge(name: str, help: str, read: Callable[[Scrape], float | None]) -> Scalar:
    return Scalar("gauge", name, help, read)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _nats(scrape: Scrape, field: str) -> float | None:
    publisher = scrape.state.publisher
    return None if publisher is None else float(getattr(publisher.stats, field))


#: Process-wide counters and gauges, one line each.
SCALARS: tuple[Scalar, ...] = (
    counter(
        "feedd_writer_received_candles",
        "Candles taken off the ingest channel (before coalescing updates of the same candle).",
        lambda s: s.writer.received,
    ),
    counter(
        "feedd_writer_committed_candles",
        "Candles committed to the store (after coalescing).",
        lambda s: s.writer.committed,
    ),
    counter("feedd_writer_commits", "Successful commits (batches).", lambda s: s.writer.batches),
    counter(
        "feedd_writer_commit_failures",
        "Failed commit attempts (each is retried with backoff).",
        lambda s: s.writer.retries,
    ),
    counter(
        "feedd_writer_rejected_candles",
        "Candles the store's codec refused (logged and dropped).",
        lambda s: s.writer.rejected,
    ),
    counter(
        "feedd_writer_pruned_candles",
        "Candles deleted by retention (max_records).",
        lambda s: s.writer.pruned,
    ),
    counter(
        "feedd_writer_dropped_candles",
        "Held candles given up at shutdown because the store could not commit them.",
        lambda s: s.writer.dropped,
    ),
    counter(
        "feedd_writer_database_recreations",
        "Times the database file was found deleted and made anew (then healed from REST).",
        lambda s: s.writer.recreated,
    ),
    counter(
        "feedd_writer_listener_overflows",
        "Committed batches a full commit listener (live hub) could not take.",
        lambda s: s.writer.listener_overflow,
    ),
    gauge(
        "feedd_writer_queue_depth",
        "Candles held in memory for the next commit (or its retries).",
        lambda s: s.writer.pending,
    ),
    gauge(
        "feedd_writer_queue_capacity",
        "Candles the writer holds at most before ingest waits (backpressure).",
        lambda s: s.writer.held_limit,
    ),
    gauge(
        "feedd_writer_healthy",
        "1 while commits succeed, 0 after a failed commit until the next success.",
        lambda s: 1.0 if s.writer.healthy else 0.0,
    ),
    gauge(
        "feedd_database_size_bytes",
        "Size of the database on disk (with its WAL).",
        lambda s: _number(s.system.get("db_size")),
    ),
    gauge(
        "feedd_database_disk_free_bytes",
        "Free space on the filesystem holding the database.",
        lambda s: _number(s.system.get("disk_free")),
    ),
    gauge(
        "feedd_event_loop_tasks",
        "Live trio tasks (a count that keeps growing is a leak).",
        lambda s: _number(s.system.get("tasks")),
    ),
    gauge("feedd_ws_clients", "Connected /ws clients.", lambda s: len(s.state.hub.clients)),
    counter(
        "feedd_ws_client_overflows",
        "/ws clients closed because they did not keep up.",
        lambda s: s.state.hub.overflows,
    ),
    gauge(
        "feedd_web_connections",
        "Open HTTP and /ws connections.",
        lambda s: s.state.connections.open,
    ),
    counter(
        "feedd_web_connections_refused",
        "Connections closed at accept: a cap reached and none idle to close.",
        lambda s: s.state.connections.refused,
    ),
    counter(
        "feedd_web_connections_evicted",
        "Idle keep-alive connections closed to make room for a new one.",
        lambda s: s.state.connections.evicted,
    ),
    counter(
        "feedd_web_connections_accept_errors",
        "accept() failures for lack of descriptors or memory (EMFILE, ENFILE, ...).",
        lambda s: s.state.connections.accept_errors,
    ),
    gauge(
        "feedd_nats_connected",
        "1 while the NATS publisher is connected (not exported without publish.nats).",
        lambda s: _nats(s, "connected"),
    ),
    gauge(
        "feedd_nats_backlog_candles",
        "Candles waiting for the NATS broker (closed, plus the newest forming per series).",
        lambda s: _nats(s, "backlog"),
    ),
    counter(
        "feedd_nats_published_candles",
        "Candles published to NATS (closed ones acknowledged by JetStream).",
        lambda s: _nats(s, "published"),
    ),
    counter(
        "feedd_nats_dropped_forming_candles",
        "Forming updates not published to NATS: superseded while the broker was away or slow.",
        lambda s: _nats(s, "dropped_forming"),
    ),
    counter(
        "feedd_nats_dropped_closed_candles",
        "Closed candles given up because the NATS backlog was full.",
        lambda s: _nats(s, "dropped_closed"),
    ),
    counter(
        "feedd_web_connections_stalled",
        "Connections closed because the client read nothing of a response for 60 s.",
        lambda s: s.state.connections.stalled,
    ),
    counter(
        "feedd_monitor_sample_errors",
        "System samples that failed (out of descriptors, say): the last figures are kept.",
        lambda s: s.state.monitor.sample_errors,
    ),
)


def histogram_family(name: str, help: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [(_le(bound), float(count)) for bound, count in histogram.cumulative()]
    return HistogramMetricFamily(name, help, buckets=buckets, sum_value=histogram.sum)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class FeeddCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        scrape = Scrape(state, state.writer.stats, dict(state.monitor.system))
        yield _build_info()
        for scalar in SCALARS:
            value = scalar.read(scrape)
            family = CounterMetricFamily if scalar.kind == "counter" else GaugeMetricFamily
            if value is not None:
                yield family(scalar.name, scalar.help, value=value)
        yield histogram_family(
            "feedd_writer_batch_latency_seconds",
            "Time to commit one batch, from taking the store lock to the commit's end.",
            state.writer.commit_seconds,
        )
        yield from self._exchanges()
        yield self._backfill_rows()
        yield self._event_loop_busy()
        yield self._last_closed()

    def _exchanges(self) -> Iterator[Metric]:
        state = self.state
        counters = {
            key: CounterMetricFamily(f"feedd_exchange_{key}", doc, labels=EXCHANGE)
            for key, doc in EXCHANGE_COUNTERS.items()
        }
        gauges = {
            key: GaugeMetricFamily(f"feedd_exchange_{key}", doc, labels=EXCHANGE)
            for key, doc in EXCHANGE_GAUGES.items()
        }
        enabled = GaugeMetricFamily(
            "feedd_exchange_enabled",
            "1 when the exchange is enabled in the config.",
            labels=EXCHANGE,
        )
        streams = GaugeMetricFamily(
            "feedd_exchange_streams",
            "Configured streams (symbol x interval) by state: pending, live, silent, rejected, "
            "unlisted.",
            labels=["exchange", "state"],
        )
        last_message = GaugeMetricFamily(
            "feedd_exchange_last_message_timestamp_seconds",
            "When the last WebSocket frame of any connection arrived (seconds since the epoch).",
            labels=EXCHANGE,
        )
        now = time.time()
        for name, settings in sorted(state.config.exchanges.items()):
            enabled.add_metric([name], 1.0 if settings.enabled else 0.0)
            stats = state.supervisor.stats.get(name)
            if stats is None:
                continue
            for key, total in counters.items():
                total.add_metric([name], getattr(stats, key))
            for key, level in gauges.items():
                level.add_metric([name], getattr(stats, key))
            by_state = dict.fromkeys(StreamState, 0)
            for stream_state in stats.stream_states.values():
                by_state[stream_state] += 1
            for stream_state, count in by_state.items():
                streams.add_metric([name, str(stream_state)], count)
            age = stats.last_message_age()
            if age is not None:
                last_message.add_metric([name], round(now - age, 3))
        yield enabled
        yield from counters.values()
        yield from gauges.values()
        yield streams
        yield last_message

    def _backfill_rows(self) -> Metric:
        family = CounterMetricFamily(
            "feedd_backfill_rows",
            "Closed candles stored by backfill jobs, by exchange and source (rest, archive).",
            labels=["exchange", "source"],
        )
        jobs = self.state.jobs
        for (exchange, source), rows in sorted(jobs.rows.items() if jobs else ()):
            family.add_metric([exchange, source], rows)
        return family

    def _event_loop_busy(self) -> Metric:
        family = CounterMetricFamily(
            "feedd_event_loop_busy_seconds",
            "Event-loop time spent in task steps, by exchange (its connections, backfill and "
            "discovery) or 'other'; rate() of it is the share of one core, 0-1.",
            labels=["group"],
        )
        busy = self.state.monitor.busy_seconds
        for group, seconds in sorted(busy.items()):
            family.add_metric([group], seconds)
        return family

    def _last_closed(self) -> Metric:
        family = GaugeMetricFamily(
            "feedd_last_closed_candle_timestamp_seconds",
            "Open time of the newest closed candle committed per collected series, live or "
            "backfilled (seconds since the epoch).",
            labels=SERIES,
        )
        config = self.state.config
        collected = {
            (name, symbol, interval)
            for name, settings in config.exchanges.items()
            if settings.enabled
            for symbol in settings.symbols
            for interval in config.intervals
        }
        # Series no longer collected (a symbol removed, a venue disabled) must not read as stale.
        for key, open_time in sorted(self.state.hub.last_closed.items()):
            if key in collected:
                family.add_metric(list(key), open_time / 1000)
        return family


def _build_info() -> Metric:
    family = GaugeMetricFamily(
        "feedd_build_info",
        "Always 1; the labels say which feedd and which Python run.",
        labels=["version", "python"],
    )
    family.add_metric([__version__, platform.python_version()], 1.0)
    return family


#: process_* (CPU seconds, memory, fds, start time) and python_info, made once and kept out of
#: the library's global registry
_STANDARD: tuple[Collector, ...] = (
    ProcessCollector(registry=None),
    PlatformCollector(registry=None),
)


def registry_for(state: AppState) -> CollectorRegistry:
    """A registry of feedd's collector plus the library's process and platform collectors
    (its default registry is process-global; ours lives and dies with the app)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeeddCollector(state))
    for standard in _STANDARD:
        registry.register(standard)
    return registry


def render(state: AppState) -> bytes:
    return generate_latest(registry_for(state))
