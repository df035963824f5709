"""feedd's processes collect young objects at YOUNG_THRESHOLD allocations, not Python's 700."""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from feedd import config, gcsettings
from feedd.service import Service, run_service


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    """Python's own thresholds for the test, whatever ran before; put back after."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield (700, 10, 10)
    finally:
        gc.set_threshold(*saved)


def test_tune_raises_the_young_threshold_only(default_thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(700, 7, 9)
    gcsettings.tune()
    assert gc.get_threshold() == (gcsettings.YOUNG_THRESHOLD, 7, 9)
    assert gcsettings.YOUNG_THRESHOLD > 700


async def test_the_service_runs_with_it(
    tmp_path: Path, default_thresholds: tuple[int, int, int]
) -> None:
    doc = {
        "exchanges": {"binance_futures": {"enabled": False, "symbols": ["BTCUSDT"]}},
        "port": 0,
    }
    cfg = config.parse(doc).config
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db")
        )
        assert gc.get_threshold()[0] == gcsettings.YOUNG_THRESHOLD
        service.stop.set()
