"""The candle JSON of /ws and NATS: the fields, their order and their numbers, as orjson wrote
them from a dict before msgspec took over (#17)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from feedd.candle import Candle, Source
from feedd.candlejson import candle_json, candles_message, encode_candle

WIRE_ORDER = [
    "exchange", "symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "closed", "source", "committed",
]  # fmt: skip


def _decimal(rng: random.Random) -> str:
    whole = str(rng.randrange(10 ** rng.randint(1, 12)))
    if rng.random() < 0.2:
        return whole
    return f"{whole}.{rng.randrange(10 ** rng.randint(1, 12)):0{rng.randint(1, 12)}d}"


def _candle(rng: random.Random) -> Candle:
    return Candle(
        rng.choice(["binance_futures", "bybit_linear", "okx_swap"]),
        rng.choice(["BTCUSDT", "ETH-USDT-SWAP", "1000PEPEUSDT"]),
        rng.choice(["1m", "1h", "1d"]),
        rng.randrange(2**41),
        *(_decimal(rng) for _ in range(6)),
        rng.choice([None, 0, rng.randrange(2**40)]),
        rng.random() < 0.5,
        rng.choice(list(Source)),
    )


def _as_dict(candle: Candle, committed: bool) -> dict[str, Any]:
    """What /ws sent before: the same fields in a dict, prices through float()."""
    return {
        "exchange": candle.exchange,
        "symbol": candle.symbol,
        "interval": candle.interval,
        "open_time": candle.open_time,
        "open": float(candle.open),
        "high": float(candle.high),
        "low": float(candle.low),
        "close": float(candle.close),
        "volume": float(candle.volume),
        "quote_volume": float(candle.quote_volume),
        "trades": candle.trades,
        "closed": candle.closed,
        "source": candle.source.name.lower(),
        "committed": committed,
    }


@pytest.mark.parametrize("seed", range(5))
def test_same_text_as_the_dict_through_orjson(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        candle, committed = _candle(rng), rng.random() < 0.5
        text = encode_candle(candle, committed=committed)
        expected = _as_dict(candle, committed)
        assert list(orjson.loads(text)) == WIRE_ORDER
        assert orjson.loads(text) == expected
        # Values of twelve digits or fewer before the dot print alike in both encoders.
        assert text == orjson.dumps(expected)


def test_large_values_differ_only_in_how_the_exponent_is_written() -> None:
    candle = Candle("okx_swap", "X", "1m", 0, "1", "1", "1", "1", "12345678901234567890", "1", 1,
                    True, Source.WS)  # fmt: skip
    text = encode_candle(candle)
    assert b'"volume":1.2345678901234567e19' in text
    assert orjson.loads(text)["volume"] == 12345678901234567890.0


def test_candles_message_wraps_the_list() -> None:
    rng = random.Random(7)
    candles = [_candle(rng) for _ in range(3)]
    text = candles_message([candle_json(c, committed=False) for c in candles])
    assert orjson.loads(text) == {
        "type": "candles",
        "data": [_as_dict(c, committed=False) for c in candles],
    }
    assert candles_message([]) == '{"type":"candles","data":[]}'
