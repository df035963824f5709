"""``/metrics`` in Prometheus text format, collected from live counters at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from feedd.intervals import close_time
from feedd.web.state import AppState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ExchangeStats counters exported as ``feedd_exchange_<name>_total``
_COUNTERS = {
    "messages": "WebSocket messages received",
    "candles": "candle updates parsed from WebSocket messages",
    "reconnects": "WebSocket reconnects after a failure",
    "rotations": "planned connection rotations",
    "gaps_healed": "gaps filled over REST after a reconnect or a missed close",
    "parse_errors": "frames that did not parse",
    "exchange_errors": "error messages from the exchange",
    "rest_requests": "REST requests sent",
    "rest_candles": "closed candles fetched over REST",
    "rest_rate_limited": "REST answers asking to slow down (429/418 or a limit code in the body)",
}


class FeeddCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        label = ["exchange"]
        counters = {
            name: CounterMetricFamily(f"feedd_exchange_{name}", doc, labels=label)
            for name, doc in _COUNTERS.items()
        }
        gauges = {
            "enabled": GaugeMetricFamily(
                "feedd_exchange_enabled", "1 when collecting", labels=label
            ),
            "connections": GaugeMetricFamily(
                "feedd_exchange_connections", "open WebSocket connections", labels=label
            ),
            "streams_subscribed": GaugeMetricFamily(
                "feedd_exchange_streams_subscribed", "streams acknowledged", labels=label
            ),
            "rest_weight_used": GaugeMetricFamily(
                "feedd_exchange_rest_weight_used",
                "REST weight used, as the venue reports it",
                labels=label,
            ),
            "backfill_pending": GaugeMetricFamily(
                "feedd_exchange_backfill_pending", "streams waiting for a backfill", labels=label
            ),
            "messages_per_s": GaugeMetricFamily(
                "feedd_exchange_messages_per_second", "ingest rate (last second)", labels=label
            ),
            "candles_per_s": GaugeMetricFamily(
                "feedd_exchange_candles_per_second", "candle updates per second", labels=label
            ),
            "cpu_percent": GaugeMetricFamily(
                "feedd_exchange_cpu_percent", "event-loop CPU spent on this exchange", labels=label
            ),
        }
        age = GaugeMetricFamily(
            "feedd_exchange_last_message_age_seconds", "seconds since the last frame", labels=label
        )
        for name, settings in sorted(state.config.exchanges.items()):
            gauges["enabled"].add_metric([name], 1.0 if settings.enabled else 0.0)
            stats = state.supervisor.stats.get(name)
            if stats is None:
                continue
            for key, family in counters.items():
                family.add_metric([name], getattr(stats, key))
            for key in (
                "connections",
                "streams_subscribed",
                "rest_weight_used",
                "backfill_pending",
            ):
                gauges[key].add_metric([name], getattr(stats, key))
            rates = state.monitor.rates.get(name)
            if rates is not None:
                gauges["messages_per_s"].add_metric([name], rates.messages_per_s)
                gauges["candles_per_s"].add_metric([name], rates.candles_per_s)
                gauges["cpu_percent"].add_metric([name], rates.cpu_percent)
            message_age = stats.last_message_age()
            if message_age is not None:
                age.add_metric([name], message_age)
        yield from counters.values()
        yield from gauges.values()
        yield age
        yield self._freshness()
        yield from self._writer()
        yield from self._process()

    def _freshness(self) -> Metric:
        family = GaugeMetricFamily(
            "feedd_candle_freshness_seconds",
            "age of the newest closed candle per series (since its close time)",
            labels=["exchange", "symbol", "interval"],
        )
        now_ms = time.time() * 1000
        for (exchange, symbol, interval), open_time in sorted(self.state.hub.last_closed.items()):
            closed_at = close_time(interval, open_time)
            family.add_metric([exchange, symbol, interval], max(0.0, (now_ms - closed_at) / 1000))
        return family

    def _writer(self) -> Iterator[Metric]:
        stats = self.state.writer.stats
        yield CounterMetricFamily(
            "feedd_writer_received", "candles taken off the ingest channel", value=stats.received
        )
        yield CounterMetricFamily(
            "feedd_writer_committed", "candles committed to SQLite", value=stats.committed
        )
        yield CounterMetricFamily("feedd_writer_batches", "commits", value=stats.batches)
        yield CounterMetricFamily(
            "feedd_writer_retries", "failed commit attempts", value=stats.retries
        )
        yield CounterMetricFamily(
            "feedd_writer_dropped", "held candles lost at shutdown", value=stats.dropped
        )
        yield CounterMetricFamily(
            "feedd_writer_recreated",
            "database files found deleted and made anew",
            value=stats.recreated,
        )
        yield GaugeMetricFamily(
            "feedd_writer_queue_depth", "candles held for the next commit", value=stats.pending
        )
        yield GaugeMetricFamily(
            "feedd_writer_healthy", "1 while commits succeed", value=1.0 if stats.healthy else 0.0
        )
        latency = GaugeMetricFamily(
            "feedd_writer_batch_latency_seconds",
            "commit latency over recent batches",
            labels=["quantile"],
        )
        for quantile, value in (("0.5", stats.latency_p50_ms), ("0.99", stats.latency_p99_ms)):
            if value is not None:
                latency.add_metric([quantile], value / 1000)
        yield latency

    def _process(self) -> Iterator[Metric]:
        system = self.state.monitor.system
        yield GaugeMetricFamily(
            "feedd_process_rss_bytes", "resident memory", value=system.get("process_rss", 0)
        )
        yield GaugeMetricFamily(
            "feedd_database_bytes", "database size on disk", value=system.get("db_size", 0)
        )
        yield GaugeMetricFamily(
            "feedd_uptime_seconds", "seconds since start", value=time.time() - self.state.started_at
        )
        yield GaugeMetricFamily(
            "feedd_ws_clients", "connected /ws clients", value=len(self.state.hub.clients)
        )


def render(state: AppState) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeeddCollector(state))
    return generate_latest(registry)
