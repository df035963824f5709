"""The deterministic market: trades per (seed, symbol, minute) and candles aggregated from them.

Prices are integer ticks and quantities integer lot steps, so every decimal string is exact;
a price is a smooth function of time plus hashed noise, so consecutive candles join up. Minutes
before ``detail_from_ms`` (deep history, never pushed live) have no trades: their bars are
drawn directly, an hour at a time (``feedd.sim.history``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import attrs

from feedd.intervals import HOUR_MS, MINUTE_MS, close_time
from feedd.sim.history import Draw, aggregate, hour_draws
from feedd.sim.symbols import SymbolSpec, spec_for
from feedd.symbols import is_symbol

#: at most this many trades in one minute; trade ids are minute_index * this + i
MAX_TRADES_PER_MINUTE = 20
_CACHE_LIMIT = 200_000
_MASK = (1 << 64) - 1


@attrs.frozen(slots=True)
class Trade:
    time_ms: int
    price: int  # price units (10**-price_decimals)
    qty: int  # quantity units (10**-qty_decimals)
    buyer_taker: bool


@attrs.frozen(slots=True)
class Bar:
    """A candle in integer units; ``volume``/``quote`` are base and quote sums."""

    symbol: str
    interval: str
    open_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    taker_volume: int
    taker_quote: int
    trades: int
    first_id: int
    last_id: int
    last_trade_ms: int

    @property
    def close_ms(self) -> int:
        """First millisecond after the candle (``intervals.close_time``)."""
        return close_time(self.interval, self.open_ms)


class _Rng:
    """splitmix64: tiny, fast enough, and identical on every platform."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def unit(self) -> float:
        return (self.next() >> 11) / float(1 << 53)


def _hash64(*parts: object) -> int:
    key = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


class Market:
    """Deterministic trades and candles for any canonical symbol (``feedd.symbols``)."""

    def __init__(
        self,
        seed: int,
        unlisted: Iterable[str] = (),
        history_start_ms: int = 0,
        detail_from_ms: int | None = None,
        holes: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        self.seed = seed
        #: per symbol, [first, last] open times where no candle exists (``SimSettings.holes``)
        self.holes: dict[str, list[tuple[int, int]]] = {}
        for symbol, first, last in holes:
            self.holes.setdefault(symbol, []).append((first, last))
        #: no candle opens before this (venues answer REST windows from here on)
        self.history_start_ms = history_start_ms
        #: minutes opening before this are drawn without trades (None: every minute has trades)
        self.detail_from_ms = detail_from_ms
        self.unlisted: set[str] = set(unlisted)
        self._specs: dict[str, SymbolSpec] = {}
        self._trades: dict[tuple[str, int], tuple[Trade, ...]] = {}
        self._minutes: dict[tuple[str, int], Bar] = {}
        self._hours: dict[tuple[str, int], Bar] = {}
        self._hour_draws: dict[tuple[str, int], list[Draw]] = {}

    def listed(self, symbol: str) -> bool:
        return is_symbol(symbol) and symbol not in self.unlisted

    def list_symbol(self, symbol: str) -> None:
        """List ``symbol`` from now on (instrument lists and subscriptions accept it)."""
        self.unlisted.discard(symbol)

    def delist_symbol(self, symbol: str) -> None:
        self.unlisted.add(symbol)

    def exists(self, symbol: str, open_ms: int) -> bool:
        """False for a candle (of any interval) opening inside one of the symbol's holes."""
        return not any(first <= open_ms <= last for first, last in self.holes.get(symbol, ()))

    def spec(self, symbol: str) -> SymbolSpec:
        spec = self._specs.get(symbol)
        if spec is None:
            spec = self._specs[symbol] = spec_for(self.seed, symbol)
        return spec

    def mid(self, spec: SymbolSpec, t_ms: int) -> float:
        """The smooth part of the price at ``t_ms``, in price units."""
        a, b, c = spec.phases
        x = t_ms / 1000.0
        wave = (
            0.02 * math.sin(x * 2 * math.pi / 19_080 + a)
            + 0.005 * math.sin(x * 2 * math.pi / 2_820 + b)
            + 0.001 * math.sin(x * 2 * math.pi / 906 + c)
        )
        return spec.base * (1.0 + wave)

    def trades(self, symbol: str, minute_ms: int) -> tuple[Trade, ...]:
        """The trades of the minute opening at ``minute_ms``, ascending by time."""
        key = (symbol, minute_ms)
        cached = self._trades.get(key)
        if cached is not None:
            return cached
        spec = self.spec(symbol)
        rng = _Rng(_hash64(self.seed, symbol, minute_ms))
        count = 5 + rng.below(MAX_TRADES_PER_MINUTE - 4)
        # Distinct offsets, never at 0 so a fresh candle is empty for a moment (as on venues).
        offsets = sorted({1 + rng.below(MINUTE_MS - 1) for _ in range(count)})
        # Noise of a few basis points makes candles wick both ways instead of following the wave.
        spread = max(3, int(spec.base * 0.0004 / spec.tick))
        out = []
        for offset in offsets:
            t = minute_ms + offset
            ticks = round(self.mid(spec, t) / spec.tick) + rng.below(2 * spread + 1) - spread
            qty = 1 + int(spec.max_steps * rng.unit() ** 3)
            out.append(Trade(t, max(1, ticks) * spec.tick, qty * spec.qty_step, rng.below(2) == 0))
        result = tuple(out)
        if len(self._trades) > _CACHE_LIMIT:
            self._trades.clear()
        self._trades[key] = result
        return result

    def _minute(self, symbol: str, minute_ms: int, as_of_ms: int | None) -> Bar:
        """A 1m bar from the trades at or before ``as_of_ms`` (None: the whole minute)."""
        if as_of_ms is None or as_of_ms >= minute_ms + MINUTE_MS - 1:
            cached = self._minutes.get((symbol, minute_ms))
            if cached is not None:
                return cached
            if self.detail_from_ms is not None and minute_ms < self.detail_from_ms:
                return self._remember(self._quick_minute(symbol, minute_ms))
        trades = self.trades(symbol, minute_ms)
        if as_of_ms is not None:
            trades = tuple(t for t in trades if t.time_ms <= as_of_ms)
        first_id = (minute_ms // MINUTE_MS) * MAX_TRADES_PER_MINUTE
        if not trades:
            prev = self._minute(symbol, minute_ms - MINUTE_MS, None).close
            bar = Bar(symbol, "1m", minute_ms, prev, prev, prev, prev, 0, 0, 0, 0, 0, -1, -1, 0)
        else:
            prices = [t.price for t in trades]
            bar = Bar(
                symbol=symbol,
                interval="1m",
                open_ms=minute_ms,
                open=prices[0],
                high=max(prices),
                low=min(prices),
                close=prices[-1],
                volume=sum(t.qty for t in trades),
                quote=sum(t.qty * t.price for t in trades),
                taker_volume=sum(t.qty for t in trades if t.buyer_taker),
                taker_quote=sum(t.qty * t.price for t in trades if t.buyer_taker),
                trades=len(trades),
                first_id=first_id,
                last_id=first_id + len(trades) - 1,
                last_trade_ms=trades[-1].time_ms,
            )
        return self._remember(bar) if as_of_ms is None else bar

    def _remember(self, bar: Bar) -> Bar:
        if len(self._minutes) > _CACHE_LIMIT:
            self._minutes.clear()
        self._minutes[(bar.symbol, bar.open_ms)] = bar
        return bar

    def _quick_minute(self, symbol: str, minute_ms: int) -> Bar:
        """A closed 1m bar of the deep history (``feedd.sim.history``)."""
        hour_ms = minute_ms - minute_ms % HOUR_MS
        draw = self._draws(symbol, hour_ms)[(minute_ms - hour_ms) // MINUTE_MS]
        return _drawn(symbol, "1m", minute_ms, minute_ms, draw, draw[8])

    def _draws(self, symbol: str, hour_ms: int) -> list[Draw]:
        key = (symbol, hour_ms)
        cached = self._hour_draws.get(key)
        if cached is None:
            spec = self.spec(symbol)
            cached = hour_draws(self.seed, spec, hour_ms, MAX_TRADES_PER_MINUTE)
            if len(self._hour_draws) > _CACHE_LIMIT // 60:
                self._hour_draws.clear()
            self._hour_draws[key] = cached
        return cached

    def deep_hour(self, symbol: str, hour_ms: int) -> list[Draw] | None:
        """The drawn minutes of a closed hour of the deep history (None for a later hour,
        whose minutes come from trades): the same bars ``final`` gives, in bulk."""
        if self.detail_from_ms is None or hour_ms + HOUR_MS > self.detail_from_ms:
            return None
        return self._draws(symbol, hour_ms)

    def _hour(self, symbol: str, hour_ms: int) -> Bar:
        """A closed hour, cached: long candles are built from hours, not 1,440 minutes."""
        cached = self._hours.get((symbol, hour_ms))
        if cached is None:
            if self.detail_from_ms is not None and hour_ms + HOUR_MS <= self.detail_from_ms:
                # Deep history: summed from the hour's draws, no Bar per minute.
                draws = self._draws(symbol, hour_ms)
                last = hour_ms + HOUR_MS - MINUTE_MS
                cached = _drawn(symbol, "1h", hour_ms, last, aggregate(draws), draws[-1][8])
            else:
                minutes = [
                    self._minute(symbol, m, None)
                    for m in range(hour_ms, hour_ms + HOUR_MS, MINUTE_MS)
                ]
                cached = _aggregate("1h", hour_ms, minutes)
            if len(self._hours) > _CACHE_LIMIT:
                self._hours.clear()
            self._hours[(symbol, hour_ms)] = cached
        return cached

    def _span(self, symbol: str, start: int, end: int, as_of_ms: int) -> list[Bar]:
        """Bars covering [start, end) as of ``as_of_ms``: whole hours where possible."""
        if as_of_ms < start:
            return [self._minute(symbol, start, as_of_ms)]
        parts = []
        t = start
        while t < end and t <= as_of_ms:
            if t % HOUR_MS == 0 and t + HOUR_MS <= min(end, as_of_ms + 1):
                parts.append(self._hour(symbol, t))
                t += HOUR_MS
            elif t + MINUTE_MS <= as_of_ms + 1:
                parts.append(self._minute(symbol, t, None))
                t += MINUTE_MS
            else:
                parts.append(self._minute(symbol, t, as_of_ms))
                break
        return parts

    def candle(self, symbol: str, interval: str, open_ms: int, as_of_ms: int) -> Bar:
        """The candle opening at ``open_ms`` as it stood at ``as_of_ms`` (forming or final)."""
        end = close_time(interval, open_ms)
        if as_of_ms >= end - 1:
            return self.final(symbol, interval, open_ms)
        if interval == "1m":
            return self._minute(symbol, open_ms, as_of_ms)
        return _aggregate(interval, open_ms, self._span(symbol, open_ms, end, as_of_ms))

    def final(self, symbol: str, interval: str, open_ms: int) -> Bar:
        """The closed candle opening at ``open_ms``."""
        if interval == "1m":
            return self._minute(symbol, open_ms, None)
        end = close_time(interval, open_ms)
        return _aggregate(interval, open_ms, self._span(symbol, open_ms, end, end - 1))


def _drawn(
    symbol: str, interval: str, open_ms: int, last_minute_ms: int, draw: Draw, last_count: int
) -> Bar:
    """A bar of drawn minutes from ``open_ms`` to ``last_minute_ms`` (which has ``last_count``
    trades); trade ids number the minutes' trades as for real ones."""
    o, high, low, close, volume, quote, taker_volume, taker_quote, trades = draw
    return Bar(
        symbol=symbol,
        interval=interval,
        open_ms=open_ms,
        open=o,
        high=high,
        low=low,
        close=close,
        volume=volume,
        quote=quote,
        taker_volume=taker_volume,
        taker_quote=taker_quote,
        trades=trades,
        first_id=(open_ms // MINUTE_MS) * MAX_TRADES_PER_MINUTE,
        last_id=(last_minute_ms // MINUTE_MS) * MAX_TRADES_PER_MINUTE + last_count - 1,
        last_trade_ms=last_minute_ms + 59_000,
    )


def _aggregate(interval: str, open_ms: int, minutes: list[Bar]) -> Bar:
    traded = [m for m in minutes if m.trades]
    if not traded:
        first = minutes[0]
        return attrs.evolve(first, interval=interval, open_ms=open_ms)
    return Bar(
        symbol=minutes[0].symbol,
        interval=interval,
        open_ms=open_ms,
        open=traded[0].open,
        high=max(m.high for m in traded),
        low=min(m.low for m in traded),
        close=traded[-1].close,
        volume=sum(m.volume for m in traded),
        quote=sum(m.quote for m in traded),
        taker_volume=sum(m.taker_volume for m in traded),
        taker_quote=sum(m.taker_quote for m in traded),
        trades=sum(m.trades for m in traded),
        first_id=traded[0].first_id,
        last_id=traded[-1].last_id,
        last_trade_ms=traded[-1].last_trade_ms,
    )
