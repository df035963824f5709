"""/metrics as Prometheus expects it: histogram for latency, counters not rates, timestamps not
ages, build info and process metrics, every feedd metric documented (no Prometheus needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e import running_feedd, stored_closed, wait_on_commits
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import feedd
from feedd.monitor.histogram import Histogram
from feedd.service import Service

ROOT = Path(__file__).resolve().parent.parent
VENUES = {"binance_futures": ["BTCUSDT", "ETHUSDT"], "okx_futures": ["BTCUSDT"]}


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Metric, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


def all_series_closed(service: Service) -> bool:
    return len(service.state.hub.last_closed) >= sum(len(s) for s in VENUES.values())


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    # a value equal to a bound counts in that bucket (Prometheus' le is "less or equal")
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert (h.count, h.sum) == (5, pytest.approx(8.65))
    with pytest.raises(ValueError):
        Histogram([1.0, 0.5])
    with pytest.raises(ValueError):
        Histogram([])


async def test_metrics_are_counters_histograms_and_timestamps(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, VENUES) as (_sim, service, client):
        await wait_on_commits(service, lambda: all_series_closed(service))
        before = dict(service.state.hub.last_closed)
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        metrics = families(response.text)
        stored = {
            (name, symbol): max(stored_closed(tmp_path / "ohlcv.db", name, symbol, "1m"))
            for name, symbols in VENUES.items()
            for symbol in symbols
        }

    # latency is a histogram with the same number of commits as the commit counter
    latency = metrics["feedd_writer_batch_latency_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
    commits = samples(metrics["feedd_writer_commits"], "_total")[()]
    assert commits >= 1
    assert samples(latency, "_count")[()] == counts[-1] == commits

    # counters, no precomputed rates or percents, no quantile label outside a summary
    assert metrics["feedd_exchange_messages"].type == "counter"
    assert metrics["feedd_event_loop_busy_seconds"].type == "counter"
    for name, family in metrics.items():
        assert not re.search(r"per_second|percent|_age_", name), name
        if family.type != "summary":
            assert all("quantile" not in s.labels for s in family.samples), name
    busy = samples(metrics["feedd_event_loop_busy_seconds"], "_total")
    assert {dict(k)["group"] for k in busy} >= set(VENUES)

    # build info and the standard process metrics
    (build,) = metrics["feedd_build_info"].samples
    assert build.value == 1 and build.labels["version"] == feedd.__version__
    assert samples(metrics["process_resident_memory_bytes"])[()] > 0
    assert "process_cpu_seconds" in metrics and "process_start_time_seconds" in metrics

    # freshness: the open time of the newest closed candle per series, in epoch seconds
    fresh = metrics["feedd_last_closed_candle_timestamp_seconds"]
    assert fresh.type == "gauge"
    got = {(dict(k)["exchange"], dict(k)["symbol"]): v for k, v in samples(fresh).items()}
    assert set(got) == set(stored)
    for series, seconds in got.items():
        # between what the hub had before the scrape and what the store had after it
        assert before[(*series, "1m")] <= seconds * 1000 <= stored[series], series


async def test_series_no_longer_collected_leave_the_freshness_metric(tmp_path: Path) -> None:
    """A disabled venue's series would otherwise read as stale forever and page someone."""
    async with running_feedd(tmp_path, VENUES) as (_sim, service, client):
        await wait_on_commits(service, lambda: all_series_closed(service))
        off = await client.post(
            "/toggleExchange", json={"exchange": "okx_futures", "enabled": False}
        )
        assert off.status_code == 200
        metrics = families((await client.get("/metrics")).text)
    exchanges = {
        dict(k)["exchange"] for k in samples(metrics["feedd_last_closed_candle_timestamp_seconds"])
    }
    assert exchanges == {"binance_futures"}
    enabled = samples(metrics["feedd_exchange_enabled"])
    assert enabled[(("exchange", "okx_futures"),)] == 0


async def test_every_feedd_metric_is_documented(tmp_path: Path) -> None:
    async with running_feedd(tmp_path, {"bybit_futures": ["BTCUSDT"]}) as (_sim, service, client):
        await wait_on_commits(service, lambda: bool(service.state.hub.last_closed))
        metrics = families((await client.get("/metrics")).text)
    text = (ROOT / "docs" / "API.md").read_text()
    section = text[text.index("`GET /metrics`") : text.index("`GET /logs")]
    exposed = {
        # the parser drops _total from counters and _info from infos; the docs name samples
        name + ("_total" if family.type == "counter" else "")
        for name, family in metrics.items()
        if name.startswith("feedd_")
    }
    missing = sorted(name for name in exposed if f"`{name}`" not in section)
    assert missing == [], "metrics missing from docs/API.md's /metrics section"
    assert "`process_*`" in section
