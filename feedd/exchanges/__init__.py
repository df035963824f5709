"""The registry of exchange modules, keyed by their config name.

Adding a venue means writing one module here and listing it below; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping

from feedd.exchanges import binance, bybit, okx
from feedd.exchanges.contract import ExchangeModule

REGISTRY: Mapping[str, ExchangeModule] = {
    binance.NAME: binance,
    bybit.NAME: bybit,
    okx.NAME: okx,
}


def get(name: str) -> ExchangeModule:
    """The module registered as ``name``; KeyError for an unknown exchange."""
    return REGISTRY[name]
