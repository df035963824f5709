"""Strict field readers shared by the exchange parsers: they return a value or raise ParseError.

Every value that reaches the store passes through one of these, so a malformed frame is
rejected at the boundary and never poisons a write batch.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from feedd.errors import ParseError

# ASCII digits only: ``\d`` would also accept e.g. Arabic-Indic digits, which Decimal parses.
_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
#: six decimals joined by commas; a value with a comma of its own cannot make it match. The
#: same language as ``_DECIMAL`` six times, with possessive repeats: a digit run is always
#: followed by a dot, a comma or the end, so giving digits back can never help a match, and
#: not keeping backtrack points makes the check 0.72 -> 0.50 us per candle.
_SIX_DECIMALS = re.compile(",".join([r"[0-9]{1,30}+(?:\.[0-9]{1,30}+)?+"] * 6)).fullmatch
# Times, trade counts and codes are never negative, and values reaching the store must fit
# SQLite's signed 64-bit INTEGER.
_COUNT = range(0, 2**63)


def load_json(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}") from None


def load_object(data: str | bytes) -> dict[str, Any]:
    value = load_json(data)
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}")
    return value


def decimal(value: object, name: str) -> str:
    """A non-negative decimal string such as ``"94172.40"``, returned unchanged."""
    # The cheap test accepts exactly the pattern's strings for sane lengths (ASCII digits
    # with at most one inner dot); the regex settles the rest. This runs six times per
    # candle on the ingest hot path.
    if (
        type(value) is str
        and 0 < len(value) <= 40
        and value.isascii()
        and value[0] != "."
        and value[-1] != "."
        and value.replace(".", "", 1).isdigit()
    ) or (isinstance(value, str) and _DECIMAL.fullmatch(value)):
        return value
    raise ParseError(f"{name}: expected a decimal string, got {value!r}")


def six_decimals(o: str, h: str, low: str, c: str, v: str, q: str) -> bool:
    """Whether ``decimal`` accepts all six strings, by one regex over them joined: a candle's
    six values cost 2.5x as much as six calls. False only says: check them one by one (the
    regex alone refuses the 31 to 40 digit strings ``decimal`` also takes)."""
    return _SIX_DECIMALS(f"{o},{h},{low},{c},{v},{q}") is not None


def integer(value: object, name: str) -> int:
    """A non-negative integer given as a JSON number (bools refused)."""
    if isinstance(value, int) and not isinstance(value, bool) and value in _COUNT:
        return value
    raise ParseError(f"{name}: expected a non-negative integer, got {value!r}")


def int_string(value: object, name: str) -> int:
    """An integer given as a string of digits, as Bybit REST and OKX send times."""
    # The length bound also keeps int() clear of its 4300-digit ValueError.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        if number in _COUNT:
            return number
    raise ParseError(f"{name}: expected a string of digits, got {value!r}")


def boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ParseError(f"{name}: expected true or false, got {value!r}")


def text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    raise ParseError(f"{name}: expected a string, got {value!r}")


def array(value: object, name: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise ParseError(f"{name}: expected an array, got {type(value).__name__}")


def obj(value: object, name: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ParseError(f"{name}: expected an object, got {type(value).__name__}")


def field(mapping: dict[str, Any], key: str) -> Any:
    try:
        return mapping[key]
    except KeyError:
        raise ParseError(f"missing field {key!r}") from None


def dumps(value: object) -> str:
    """Compact JSON text for an outgoing frame."""
    return orjson.dumps(value).decode()
