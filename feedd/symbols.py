"""What a canonical symbol may be: a base of letters and digits of any script, then ``USDT``.

Venues list perpetuals whose names are not ASCII (Binance's ``币安人生USDT``), so the rule is
Unicode letters and numbers (categories L* and N*), never a lowercase or titlecase letter (so
``btcusdt`` and ``BTCUSDT`` cannot name two series), and nothing else: no punctuation, marks,
symbols, whitespace or control characters, hence no path tricks (``/``, ``..``, ``%``).
"""

from __future__ import annotations

import unicodedata
from typing import TypeGuard

QUOTE = "USDT"
#: code points of a base; the longest listed today (``1000000BABYDOGE``) has 15
MAX_BASE_CHARS = 24
#: what an error message shows the user
RULE = "letters and digits of any script, no lowercase, ending in USDT (e.g. BTCUSDT)"

# Marks (M*) are left out: combining and variation marks can be invisible, and an invisible
# character would make two symbols that look the same.
_CATEGORIES = frozenset({"Lu", "Lm", "Lo", "Nd", "Nl", "No"})


def is_name(text: str, max_chars: int) -> bool:
    """``text`` is 1..``max_chars`` letters (none lowercase) and digits of any script."""
    if not 0 < len(text) <= max_chars:
        return False
    if text.isascii():
        # The common case, and a fast one: ASCII upper-case letters and digits.
        return text.isalnum() and not any("a" <= ch <= "z" for ch in text)
    # islower() also catches lowercase outside Ll (e.g. the small Roman numeral ⅻ, Nl).
    return all(unicodedata.category(ch) in _CATEGORIES and not ch.islower() for ch in text)


def is_symbol(value: object) -> TypeGuard[str]:
    """``value`` is a canonical symbol such as ``BTCUSDT``, ``1000PEPEUSDT`` or ``币安人生USDT``."""
    return (
        isinstance(value, str)
        and value.endswith(QUOTE)
        and is_name(value[: -len(QUOTE)], MAX_BASE_CHARS)
    )
