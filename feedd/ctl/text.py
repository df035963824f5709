"""Human-readable output: aligned tables, byte sizes, ages, UTC times and exact numbers."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from decimal import Decimal

#: placeholder for a value the server did not give
NONE = "-"


def width(cell: str) -> int:
    """Terminal columns: a Han or other wide character (``币安人生USDT``) takes two."""
    if cell.isascii():
        return len(cell)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in cell)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; indexes in ``right`` are right-aligned (numbers)."""
    widths = [width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], width(cell))

    def line(cells: Sequence[str]) -> str:
        padded = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - width(cell))
            padded.append(pad + cell if i in right else cell + pad)
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def size(value: object) -> str:
    """Bytes in binary units: ``512 B``, ``12.3 MiB``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def age(seconds: object) -> str:
    """A duration in its two largest units: ``0.4s``, ``42s``, ``3m 12s``, ``5h 02m``, ``2d 3h``."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return NONE
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def utc(ms: object) -> str:
    """Milliseconds since the epoch as ``2025-11-24 16:00:00`` (UTC)."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return NONE
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def number(value: object) -> str:
    """A JSON number as written, never in exponent form (``1e-05`` reads badly as a price)."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text else text
    return str(value)


def count(value: object) -> str:
    """Large integers with thousands separators."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return number(value)


def percent(value: object) -> str:
    return f"{value:.1f}%" if isinstance(value, int | float) else NONE


def millis(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else NONE


def rate(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else NONE


def yes_no(value: object) -> str:
    return NONE if value is None else ("yes" if value else "no")


def words(values: object) -> str:
    if not isinstance(values, list) or not values:
        return "(none)"
    return " ".join(str(v) for v in values)
