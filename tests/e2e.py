"""Helpers for end-to-end tests: run feedd against the simulator and compare with its truth."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from feedd import config
from feedd.intervals import MINUTE_MS
from feedd.service import Service, run_service
from feedd.sim.app import Simulator, open_simulator
from feedd.sim.settings import SimSettings
from feedd.store import codec

Row = tuple[str, str, str, str, str, str, int | None]


def venue_urls(sim: Simulator, name: str) -> dict[str, str]:
    """The simulated venue's base URLs as config keys (its bulk archive too, where it serves
    one: backfill jobs would otherwise reach for the real one)."""
    (urls,) = (u for u in sim.urls() if u["exchange"] == name)
    return {key: value for key, value in urls.items() if key != "exchange"}


def feedd_config(sim: Simulator, symbols: dict[str, list[str]], **extra: Any) -> config.Config:
    exchanges = {
        name: {
            "symbols": syms,
            **venue_urls(sim, name),
            # At 60x speed a real second is a minute: tighten the watchdog accordingly.
            "silence_timeout": 3,
        }
        for name, syms in symbols.items()
    }
    doc: dict[str, Any] = {
        "exchanges": exchanges,
        "intervals": ["1m"],
        "bootstrap_load": 20,
        "batch_interval": 50,
        "port": 0,
    }
    doc.update(extra)
    return config.parse(doc).config


def stored_closed(db: Path, exchange: str, symbol: str, interval: str) -> dict[int, Row]:
    """Closed candles as stored, decoded back to the exact decimal strings."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,"
            " c.trades FROM candles c JOIN series s ON s.id = c.series"
            " WHERE s.exchange = ? AND s.symbol = ? AND s.interval = ? AND (c.flags & 1) = 1",
            (exchange, symbol, interval),
        ).fetchall()
    finally:
        conn.close()
    return {
        r[0]: (*(codec.decode_str(v) for v in r[1:7]), r[7])  # type: ignore[misc]
        for r in rows
    }


def truth_rows(sim: Simulator, exchange: str, symbol: str, start: int, end: int) -> dict[int, Row]:
    return {
        t.open_time: (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades)
        for t in sim.truth(exchange, symbol, "1m", start, end)
    }


def compare(
    sim: Simulator, db: Path, exchange: str, symbols: Iterable[str], start: int, end: int
) -> list[str]:
    """Differences between stored closed candles and the truth in [start, end]."""
    problems = []
    for symbol in symbols:
        truth = truth_rows(sim, exchange, symbol, start, end)
        stored = {
            t: row
            for t, row in stored_closed(db, exchange, symbol, "1m").items()
            if start <= t <= end
        }
        if len(truth) != (end - start) // MINUTE_MS + 1:
            problems.append(f"{symbol}: truth has {len(truth)} candles, window is wrong")
        for t in sorted(set(truth) - set(stored)):
            problems.append(f"{exchange} {symbol} {t}: missing")
        for t in sorted(set(stored) - set(truth)):
            problems.append(f"{exchange} {symbol} {t}: not in truth")
        for t in sorted(set(truth) & set(stored)):
            if truth[t] != stored[t]:
                problems.append(f"{exchange} {symbol} {t}: stored {stored[t]} != {truth[t]}")
    return problems


async def wait_for_truth(
    service: Service,
    sim: Simulator,
    db: Path,
    exchange: str,
    symbols: Iterable[str],
    start: int,
    end: int,
) -> None:
    """Wait, on commits rather than sleeps, until the store equals the truth in the window."""
    symbols = list(symbols)
    with service.state.writer.open_commit_listener() as commits:
        while compare(sim, db, exchange, symbols, start, end):
            await commits.receive()


@asynccontextmanager
async def running_feedd(
    tmp_path: Path, symbols: dict[str, list[str]], **extra: Any
) -> AsyncIterator[tuple[Simulator, Service, httpx.AsyncClient]]:
    """The simulator (venues of ``symbols``) and feedd on port 0, run from a config file that
    API changes rewrite, with an HTTP client for its API."""
    async with open_simulator(SimSettings(venues=tuple(symbols))) as sim:
        cfg = feedd_config(sim, symbols, **extra)
        path = tmp_path / "config.json"
        config.save(path, cfg)
        async with trio.open_nursery() as nursery:
            service: Service = await nursery.start(
                functools.partial(run_service, cfg, tmp_path / "ohlcv.db", config_path=path)
            )
            try:
                async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                    yield sim, service, client
            finally:
                service.stop.set()


async def wait_on_commits(service: Service, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, checking after every commit (ingest is the clock)."""
    with service.state.writer.open_commit_listener() as commits:
        while not predicate():
            await commits.receive()


async def wait_for_stored(
    service: Service, exchange: str, symbol: str, interval: str, count: int
) -> None:
    """Wait, checking after every commit, until ``count`` candles of the series are stored
    (a REST counter moves before the candles it counts are committed)."""
    reader = service.state.reader
    with service.state.writer.open_commit_listener() as commits:
        while len(await reader.candles(exchange, symbol, interval, None, None, count)) < count:
            await commits.receive()
