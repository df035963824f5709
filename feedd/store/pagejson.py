"""A page of candles as JSON bytes without a dict per row: every value goes through one
``orjson.dumps`` of a flat list, and the row's keys come from a template.

The bytes are exactly ``orjson.dumps([{field: value, ...}, ...])``'s (same number formatting,
same key order): a value's JSON never holds a comma (numbers, ``true``/``false``/``null`` and the
fixed source names), so the flat array splits back into one token per value. Per-row dicts
and their serialisation were ~2/3 of a 1,000-row page's CPU; this is ~1/3 of that.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson

from feedd.store.schema import FLAG_ARCHIVE, FLAG_CLOSED, FLAG_REST, source_name

#: a candle's JSON keys, in CandleRow's field order
KEYS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "closed",
    "source",
)
_VALUE_KEYS = KEYS[:8]
#: one resampled row: all ten values
_ROW10 = b"{" + b",".join(b'"%s":%%b' % k.encode() for k in KEYS) + b"}"
#: one stored row: eight values, then ``"closed":…,"source":…`` chosen by its flags
_ROW9 = b"{" + b",".join(b'"%s":%%b' % k.encode() for k in _VALUE_KEYS) + b",%b}"
_FLAG_BITS = FLAG_CLOSED | FLAG_REST | FLAG_ARCHIVE


def _tail(flags: int) -> bytes:
    return orjson.dumps({"closed": bool(flags & FLAG_CLOSED), "source": source_name(flags)})[1:-1]


#: the JSON of ``closed`` and ``source`` by the flags' token as orjson writes it
_TAILS = {str(f).encode(): _tail(f) for f in range(_FLAG_BITS + 1)}


def stored(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows of (open_time, open, high, low, close, volume, quote_volume, trades, flags)."""
    tokens = _tokens(rows, 9)
    if tokens is None:
        return orjson.dumps([_stored_dict(r) for r in rows])
    flags = tokens[8::9]
    try:
        tokens[8::9] = [_TAILS[f] for f in flags]
    except KeyError:  # a flag bit this version does not know
        tokens[8::9] = [_tail(int(f)) for f in flags]
    return _fill(_ROW9, len(rows), tokens)


def resampled(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows of CandleRow's ten fields, in order (closed a bool, source a str)."""
    tokens = _tokens(rows, 10)
    if tokens is None:
        return orjson.dumps([dict(zip(KEYS, r, strict=True)) for r in rows])
    return _fill(_ROW10, len(rows), tokens)


def _stored_dict(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(_VALUE_KEYS, row, strict=False))
    d["closed"] = bool(row[8] & FLAG_CLOSED)
    d["source"] = source_name(row[8])
    return d


def _tokens(rows: Sequence[Sequence[Any]], width: int) -> list[bytes] | None:
    """Each value's JSON, row after row; None if a row is not ``width`` values or a value's
    JSON holds a comma (a string: the caller serialises the slow, general way)."""
    if not rows:
        return []
    flat = orjson.dumps(list(itertools.chain.from_iterable(rows)))
    tokens = flat[1:-1].split(b",")
    if len(tokens) != width * len(rows) or set(map(len, rows)) != {width}:
        return None
    return tokens


def _fill(row: bytes, count: int, tokens: list[bytes]) -> bytes:
    if not count:
        return b"[]"
    return b"[" + b",".join(itertools.repeat(row, count)) % tuple(tokens) + b"]"
