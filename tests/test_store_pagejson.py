"""The template-built JSON page is byte for byte orjson's serialisation of one dict per row."""

from __future__ import annotations

import random
import struct
from typing import Any

import orjson
import pytest

from feedd.store import pagejson
from feedd.store.schema import FLAG_CLOSED, source_name

#: floats whose shortest form is awkward: exponents both ways, signed zero, the extremes
AWKWARD = [
    0.0, -0.0, 1e16, 1.5e16, 1e-7, 2.5e-5, 123456789012345.67, 0.1, 1 / 3, 5e-324,
    1.7976931348623157e308, -94172.4, 1e22, 1e21, 9.999999999999999e20, float("inf"),
    float("nan"),
]  # fmt: skip


def random_float(rng: random.Random) -> float:
    if rng.random() < 0.3:
        return rng.choice(AWKWARD)
    if rng.random() < 0.5:  # any bit pattern: every exponent and mantissa
        value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return value
    return round(rng.uniform(-1e6, 1e6), rng.randint(0, 8))


def stored_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """The dict the page held before the templates (feedd 0.x ``row_dict``)."""
    d = dict(zip(pagejson.KEYS[:8], row, strict=False))
    d["closed"] = bool(row[8] & FLAG_CLOSED)
    d["source"] = source_name(row[8])
    return d


def stored_rows(rng: random.Random, count: int, flags: list[int]) -> list[tuple[Any, ...]]:
    return [
        (
            rng.randint(0, 2**62),
            *(random_float(rng) for _ in range(6)),
            rng.choice([None, 0, rng.randint(1, 2**40)]),
            rng.choice(flags),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_stored_rows_as_orjson_dicts(seed: int) -> None:
    rng = random.Random(seed)
    rows = stored_rows(rng, rng.randint(1, 300), list(range(8)))
    assert pagejson.stored(rows) == orjson.dumps([stored_dict(r) for r in rows])


def test_unknown_flag_bits_read_as_before() -> None:
    rows = stored_rows(random.Random(1), 50, [0, 1, 8, 9, 13, 255])
    assert pagejson.stored(rows) == orjson.dumps([stored_dict(r) for r in rows])


@pytest.mark.parametrize("seed", range(20))
def test_resampled_rows_as_orjson_dicts(seed: int) -> None:
    rng = random.Random(seed)
    rows = [
        (
            rng.randint(0, 2**62),
            *(random_float(rng) for _ in range(6)),
            rng.choice([None, rng.randint(0, 2**40)]),
            rng.random() < 0.5,
            rng.choice(["ws", "rest", "archive"]),
        )
        for _ in range(rng.randint(1, 300))
    ]
    expected = orjson.dumps([dict(zip(pagejson.KEYS, r, strict=True)) for r in rows])
    assert pagejson.resampled(rows) == expected


def test_a_value_holding_a_comma_takes_the_general_way() -> None:
    rows = [(1, 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, 7, True, "a,b"), (2, *[1.0] * 6, None, False, "ws")]
    expected = orjson.dumps([dict(zip(pagejson.KEYS, r, strict=True)) for r in rows])
    assert pagejson.resampled(rows) == expected


def test_empty_pages() -> None:
    assert pagejson.stored([]) == b"[]"
    assert pagejson.resampled([]) == b"[]"
