"""Instrument lists of the three venues: the listed universe plus rows a collector must filter
out (dated futures, USDC or coin-margined contracts, delisted, pre-launch, suspended).
"""

from __future__ import annotations

from typing import Any

from feedd.sim.market import Market
from feedd.sim.symbols import UNICODE_SYMBOL, SymbolSpec, fmt, universe

LAUNCH_MS = 1_569_398_400_000  # 2019-09-25, when Binance USD-M opened
NEVER_MS = 4_133_404_800_000  # Binance's "no delivery date"


def _tick(spec: SymbolSpec) -> str:
    return fmt(spec.tick, spec.price_decimals)


def _step(spec: SymbolSpec) -> str:
    return fmt(spec.qty_step, spec.qty_decimals)


def listing_ms(market: Market) -> int:
    """When the symbols listed: their first candle, so that a collector going back to the
    listing finds history right there (never before the real USD-M launch)."""
    minute = 60_000
    return max(LAUNCH_MS, -(-market.history_start_ms // minute) * minute)


def listed_symbols(market: Market, size: int) -> tuple[str, ...]:
    return universe(market.seed, size, frozenset(market.unlisted))


# ----------------------------------------------------------------------------- Binance


def binance_symbols(market: Market, size: int) -> list[dict[str, Any]]:
    def row(symbol: str, contract: str, status: str, quote: str = "USDT") -> dict[str, Any]:
        spec = market.spec(symbol if symbol.endswith("USDT") else "BTCUSDT")
        base = symbol.split("_")[0].removesuffix(quote)
        return {
            "symbol": symbol,
            "pair": symbol.split("_")[0],
            "contractType": contract,
            "deliveryDate": NEVER_MS if "PERPETUAL" in contract else 1_774_598_400_000,
            "onboardDate": listing_ms(market),
            "status": status,
            "baseAsset": base,
            "quoteAsset": quote,
            "marginAsset": quote,
            "pricePrecision": spec.price_decimals,
            "quantityPrecision": spec.qty_decimals,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _tick(spec),
                    "maxPrice": "4529764",
                    "tickSize": _tick(spec),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _step(spec),
                    "maxQty": "1000",
                    "stepSize": _step(spec),
                },
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        }

    rows = [row(s, "PERPETUAL", "TRADING") for s in listed_symbols(market, size)]
    if market.listed(UNICODE_SYMBOL):
        rows.append(row(UNICODE_SYMBOL, "PERPETUAL", "TRADING"))
    rows += [row(s, "PERPETUAL", "SETTLING") for s in sorted(market.unlisted)]
    rows += [
        row("BTCUSDT_260327", "CURRENT_QUARTER", "TRADING"),
        row("ETHUSDT_260626", "NEXT_QUARTER", "TRADING"),
        row("LUNAUSDT", "PERPETUAL", "SETTLING"),
        row("BTCUSDC", "PERPETUAL", "TRADING", quote="USDC"),
        row("XAUUSDT", "TRADIFI_PERPETUAL", "TRADING"),
        row("NEWLISTUSDT", "PERPETUAL", "PENDING_TRADING"),
    ]
    return rows


# ----------------------------------------------------------------------------- Bybit


def bybit_instruments(market: Market, size: int) -> list[dict[str, Any]]:
    """The default (``Trading`` only) linear list, in the venue's order."""

    def row(symbol: str, contract: str, settle: str = "USDT") -> dict[str, Any]:
        spec = market.spec(symbol if symbol.endswith("USDT") else "BTCUSDT")
        base = symbol.split("-")[0].removesuffix(settle).removesuffix("PERP")
        return {
            "symbol": symbol,
            "contractType": contract,
            "status": "Trading",
            "baseCoin": base,
            "quoteCoin": settle,
            "launchTime": str(listing_ms(market)),
            "deliveryTime": "0" if contract == "LinearPerpetual" else "1774598400000",
            "deliveryFeeRate": "",
            "priceScale": str(spec.price_decimals),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": _tick(spec),
                "maxPrice": "1999999.80",
                "tickSize": _tick(spec),
            },
            "lotSizeFilter": {
                "maxOrderQty": "1190.000",
                "minOrderQty": _step(spec),
                "qtyStep": _step(spec),
                "postOnlyMaxOrderQty": "1190.000",
                "maxMktOrderQty": "500.000",
                "minNotionalValue": "5",
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": settle,
            "copyTrading": "both",
            "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005",
            "isPreListing": False,
            "preListingInfo": None,
            "displayName": "",
            "symbolType": "",
        }

    rows = [row(s, "LinearPerpetual") for s in listed_symbols(market, size)]
    rows += [
        row("BTCPERP", "LinearPerpetual", settle="USDC"),
        row("ETHUSDC", "LinearPerpetual", settle="USDC"),
        row("BTCUSDT-27MAR26", "LinearFutures"),
        row("ETHUSDT-26JUN26", "LinearFutures"),
    ]
    return rows


# ----------------------------------------------------------------------------- OKX


def okx_instruments(market: Market, size: int) -> list[dict[str, Any]]:
    def row(base: str, state: str, settle: str = "USDT") -> dict[str, Any]:
        symbol = base + "USDT"
        spec = market.spec(symbol)
        inverse = settle != "USDT"
        inst_family = f"{base}-{'USD' if inverse else 'USDT'}"
        return {
            "instType": "SWAP",
            "instId": f"{inst_family}-SWAP",
            "instFamily": inst_family,
            "uly": inst_family,
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": settle,
            "ctVal": "100" if inverse else "0.01",
            "ctMult": "1",
            "ctValCcy": "USD" if inverse else base,
            "ctType": "inverse" if inverse else "linear",
            "listTime": str(listing_ms(market)),
            "expTime": "",
            "lever": "100",
            "alias": "",
            "tickSz": _tick(spec),
            "lotSz": "0.01",
            "minSz": "0.01",
            "state": state,
            "ruleType": "normal",
            "optType": "",
            "stk": "",
            "category": "1",
            "maxLmtSz": "100000000",
            "maxMktSz": "12000",
        }

    rows = [row(s.removesuffix("USDT"), "live") for s in listed_symbols(market, size)]
    rows += [row(s.removesuffix("USDT"), "suspend") for s in sorted(market.unlisted)]
    rows.append(row("BTC", "live", settle="BTC"))
    rows.append(row("OLDCOIN", "suspend"))
    preopen = row("NEWCOIN", "preopen")
    preopen.update(listTime="", tickSz="", lotSz="", minSz="", ctVal="", lever="")
    rows.append(preopen)
    return rows
