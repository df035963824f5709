"""The one-regex check of a candle's six decimals never accepts what ``fields.decimal``
refuses, and a parser that falls back to ``decimal`` one by one answers as before."""

from __future__ import annotations

import random

import pytest

from feedd.candle import Source
from feedd.errors import ParseError
from feedd.exchanges import fields as f
from feedd.exchanges.common import ohlcv_candle
from feedd.exchanges.contract import Stream

PIECES = ["0", "1", "9", "12", "94172", ".", ".", ",", "", "-", "e", " ", "\n", "٣", "1" * 31]


def accepted(value: object) -> bool:
    try:
        f.decimal(value, "v")
    except ParseError:
        return False
    return True


def test_six_decimals_never_accepts_what_decimal_refuses() -> None:
    rng = random.Random(11)
    agree = 0
    for _ in range(30000):
        six = ["".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 5))) for _ in range(6)]
        if rng.random() < 0.5:  # mostly valid candles, one value spoiled or not
            six = [f"{rng.randrange(10**6)}.{rng.randrange(100)}" for _ in range(6)]
            if rng.random() < 0.5:
                six[rng.randrange(6)] = rng.choice(PIECES) + rng.choice(PIECES)
        fast = f.six_decimals(*six)
        if fast:
            assert all(accepted(v) for v in six), six
            agree += 1
        else:
            assert not all(accepted(v) for v in six) or any(len(v) > 30 for v in six), six
    assert agree > 5000  # the valid shape does take the fast way


@pytest.mark.parametrize(
    "six",
    [
        ("1,2", "3", "4", "5", "6", ""),  # a comma inside a value cannot shift the fields
        ("1", "2", "3", "4", "5", "6\n"),
        ("1", "2", "3", "4", "5", "٣"),
        ("1.", "2", "3", "4", "5", "6"),
    ],
)
def test_six_decimals_refuses(six: tuple[str, ...]) -> None:
    assert not f.six_decimals(*six)


def test_ohlcv_candle_checks_one_by_one_when_the_regex_declines() -> None:
    stream = Stream("BTCUSDT", "1m")
    long = "1" * 35  # decimal takes up to 40 digits; the joined regex only 30
    candle = ohlcv_candle("x", stream, 0, ["1", "2", "3", "4", "5", long], True, Source.WS)
    assert candle.quote_volume == long
    with pytest.raises(ParseError, match="high: expected a decimal string"):
        ohlcv_candle("x", stream, 0, ["1", 2, "3", "4", "5", "6"], True, Source.WS)
    with pytest.raises(ParseError, match="low: expected a decimal string"):
        ohlcv_candle("x", stream, 0, ["1", "2", "-3", "4", "5", "6"], True, Source.WS)
