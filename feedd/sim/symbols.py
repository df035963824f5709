"""Per-symbol constants (base price, decimals, lot size) and the listed universe of symbols.

BTCUSDT and ETHUSDT look like the real ones; every other symbol is derived from a hash so
any canonical name (``feedd.symbols``) trades at a stable, plausible price.
"""

from __future__ import annotations

import hashlib
import math

import attrs

#: well-known bases listed first, so the universe looks familiar in a demo
MAJORS = [
    "BTC",
    "ETH",
    "SOL",
    "XRP",
    "DOGE",
    "BNB",
    "ADA",
    "LINK",
    "AVAX",
    "TRX",
    "DOT",
    "LTC",
    "BCH",
    "NEAR",
    "APT",
    "ARB",
    "OP",
    "SUI",
    "1000PEPE",
    "1000SHIB",
    "WIF",
    "TON",
    "ATOM",
    "FIL",
    "ETC",
    "INJ",
    "SEI",
    "TIA",
    "UNI",
    "AAVE",
]
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Binance lists perpetuals whose base is not ASCII (PROTOCOLS.md section 7); the simulated
#: Binance lists this one besides the universe, so a collector has to cope with it
UNICODE_SYMBOL = "币安人生USDT"


@attrs.frozen(slots=True)
class SymbolSpec:
    """How one symbol trades: prices in units of 10**-price_decimals, qty in 10**-qty_decimals."""

    symbol: str
    base: int
    tick: int
    price_decimals: int
    qty_step: int
    qty_decimals: int
    max_steps: int
    phases: tuple[float, float, float]

    @property
    def base_asset(self) -> str:
        return self.symbol[: -len("USDT")]

    def price(self, units: int) -> str:
        return fmt(units, self.price_decimals)

    def qty(self, units: int) -> str:
        return fmt(units, self.qty_decimals)

    def quote(self, units: int) -> str:
        return fmt(units, self.price_decimals + self.qty_decimals)

    def contracts(self, units: int, ct_val_decimals: int = 2) -> str:
        """Base quantity expressed in contracts of 10**-ct_val_decimals base each (OKX)."""
        shift = self.qty_decimals - ct_val_decimals
        if shift >= 0:
            return fmt(units, shift)
        return fmt(units * 10**-shift, 0)


def fmt(units: int, decimals: int) -> str:
    """``fmt(9417240, 2) == "94172.40"``: an exact decimal string with fixed decimals."""
    if decimals == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def _unit_floats(seed: int, symbol: str, n: int) -> list[float]:
    digest = hashlib.blake2b(f"{seed}:{symbol}:spec".encode(), digest_size=8 * n).digest()
    return [int.from_bytes(digest[8 * i : 8 * i + 8], "big") / 2.0**64 for i in range(n)]


def spec_for(seed: int, symbol: str) -> SymbolSpec:
    u = _unit_floats(seed, symbol, 4)
    phases = (u[1] * 2 * math.pi, u[2] * 2 * math.pi, u[3] * 2 * math.pi)
    if symbol == "BTCUSDT":
        return SymbolSpec(symbol, 9_420_000, 10, 2, 1, 3, 500, phases)
    if symbol == "ETHUSDT":
        return SymbolSpec(symbol, 330_000, 1, 2, 1, 3, 5_000, phases)
    price = 10 ** (-3 + 6.3 * u[0])
    magnitude = math.floor(math.log10(price))
    price_decimals = min(8, max(1, 5 - magnitude))
    qty_decimals = min(3, max(0, magnitude + 1))
    base = max(10_000, round(price * 10**price_decimals))
    step_value = price * 10.0**-qty_decimals
    max_steps = max(10, int(20_000 / step_value))
    return SymbolSpec(symbol, base, 1, price_decimals, 1, qty_decimals, max_steps, phases)


def universe(seed: int, size: int, unlisted: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """``size`` distinct USDT symbols (majors first, then hashed names), minus ``unlisted``."""
    names: list[str] = []
    seen: set[str] = set()
    for base in MAJORS:
        if len(names) >= size:
            break
        names.append(base + "USDT")
        seen.add(base + "USDT")
    counter = 0
    while len(names) < size:
        counter += 1
        digest = hashlib.blake2b(f"{seed}:universe:{counter}".encode(), digest_size=8).digest()
        length = 3 + digest[0] % 3
        symbol = "".join(_LETTERS[b % 26] for b in digest[1 : 1 + length]) + "USDT"
        if symbol not in seen:
            seen.add(symbol)
            names.append(symbol)
    return tuple(s for s in names if s not in unlisted)
