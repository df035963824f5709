"""Coverage runs under live-shaped writes: each batch closes the next candle of many series,
which the writer settles against the newest run it remembers. Whatever happens between
batches (a gap, a re-store, a failed transaction retried, retention, a wipe), the runs equal
what the candles say."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_coverage import T0, brute_force, candle, runs_view

from feedd.errors import StoreError
from feedd.intervals import next_open
from feedd.store.database import Database

SYMBOLS = [f"S{i}USDT" for i in range(12)]


def step(interval: str, t: int, n: int) -> int:
    for _ in range(n):
        t = next_open(interval, t)
    return t


@pytest.mark.parametrize("seed", range(6))
def test_runs_follow_live_batches(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "ohlcv.db"
    db = Database.open(path)
    newest = {(s, i): T0 for s in SYMBOLS for i in ("1m", "1M")}
    try:
        for _ in range(120):
            batch = []
            for (symbol, interval), t in newest.items():
                roll = rng.random()
                if roll < 0.4:
                    continue
                if roll < 0.85:
                    count = 1 if rng.random() < 0.7 else rng.randrange(2, 4)  # consecutive
                    times = [step(interval, t, k) for k in range(1, count + 1)]
                elif roll < 0.9:
                    times = [step(interval, t, rng.randrange(2, 5))]  # leaves a hole
                elif roll < 0.95:
                    times = [t]  # stored again (T0 itself at first)
                else:
                    times = [step(interval, T0, rng.randrange(0, 8))]  # fills an old hole
                newest[symbol, interval] = max(t, *times)
                batch += [candle(symbol, interval, x, closed=rng.random() < 0.95) for x in times]
            what = rng.random()
            if what < 0.1:
                # The transaction fails after the runs were updated in it; the writer then
                # retries the same candles.
                with pytest.raises(StoreError):
                    db.write_job(batch, "job", 1, None)  # type: ignore[arg-type]
            db.write(batch)
            if what > 0.97:
                db.prune(rng.randrange(5, 30))
            if what > 0.995:
                db.wipe()
                newest = dict.fromkeys(newest, T0)
            assert runs_view(path) == brute_force(path)
    finally:
        db.close()


def test_a_retried_batch_is_covered_after_a_failed_commit(tmp_path: Path) -> None:
    """The batch that extended a run in a rolled-back transaction is not taken as stored."""
    path = tmp_path / "ohlcv.db"
    db = Database.open(path)
    try:
        db.write([candle("BTCUSDT", "1m", step("1m", T0, n)) for n in range(3)])
        db.write([candle("BTCUSDT", "1m", step("1m", T0, 3))])
        later = [candle("BTCUSDT", "1m", step("1m", T0, 4))]
        with pytest.raises(StoreError):
            db.write_job(later, "job", 1, None)  # type: ignore[arg-type]
        db.write(later)
        assert runs_view(path) == brute_force(path)
        assert runs_view(path)[0][2:5] == (T0, step("1m", T0, 4), 5)
    finally:
        db.close()
