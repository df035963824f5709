"""Which ``/ws`` clients want which candles: filters indexed by series.

Matching a candle costs a few dictionary look-ups whatever the number of filters: a client
that sent 100,000 filters used to be matched filter by filter against every candle, which
stalled the event loop that ingest shares. Each client's filters are also capped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

import attrs

from feedd.candle import Candle

#: candle filters one client may hold; a wider filter (no symbol, say) covers more series
MAX_FILTERS_PER_CLIENT = 1024

Client = TypeVar("Client", bound=Hashable)
FilterKey = tuple[str | None, str | None, str | None]
#: which of (exchange, symbol, interval) a filter names, as a 3-bit mask
Shape = int


@attrs.frozen
class CandleFilter:
    """Candles of one exchange, symbol and interval; a field left ``None`` matches any."""

    exchange: str | None = None
    symbol: str | None = None
    interval: str | None = None

    @property
    def everything(self) -> bool:
        return self.exchange is None and self.symbol is None and self.interval is None

    @property
    def key(self) -> FilterKey:
        return (self.exchange, self.symbol, self.interval)

    @property
    def shape(self) -> Shape:
        return (
            (self.exchange is not None) << 2
            | (self.symbol is not None) << 1
            | (self.interval is not None)
        )


class TooManyFilters(Exception):
    """The client holds ``MAX_FILTERS_PER_CLIENT`` filters already."""


def _key_of(candle: Candle, shape: Shape) -> FilterKey:
    return (
        candle.exchange if shape & 4 else None,
        candle.symbol if shape & 2 else None,
        candle.interval if shape & 1 else None,
    )


class FilterIndex(Generic[Client]):
    """Every client's candle filters, findable from a candle's series."""

    def __init__(self, limit: int = MAX_FILTERS_PER_CLIENT) -> None:
        self.limit = limit
        self._clients: dict[FilterKey, set[Client]] = {}
        self._filters: dict[Client, set[CandleFilter]] = {}
        #: how many filters of each shape exist: a candle is looked up only under those
        self._shapes: Counter[Shape] = Counter()

    def __bool__(self) -> bool:
        return bool(self._filters)

    def filters(self, client: Client) -> frozenset[CandleFilter]:
        return frozenset(self._filters.get(client, ()))

    def add(self, client: Client, wanted: Iterable[CandleFilter]) -> None:
        """Add filters whole, or none of them when they would pass the cap."""
        wanted = set(wanted)
        held = self._filters.get(client, set())
        if len(held | wanted) > self.limit:
            raise TooManyFilters(
                f"at most {self.limit} candle filters per connection; unsubscribe some, or "
                "subscribe with fewer fields (no symbol: every symbol of an exchange)"
            )
        held = self._filters.setdefault(client, held)
        for item in wanted - held:
            held.add(item)
            self._clients.setdefault(item.key, set()).add(client)
            self._shapes[item.shape] += 1

    def discard(self, client: Client, unwanted: Iterable[CandleFilter]) -> None:
        held = self._filters.get(client)
        if held is None:
            return
        for item in set(unwanted) & held:
            held.discard(item)
            clients = self._clients[item.key]
            clients.discard(client)
            if not clients:
                del self._clients[item.key]
            self._shapes[item.shape] -= 1
            if not self._shapes[item.shape]:
                del self._shapes[item.shape]
        if not held:
            del self._filters[client]

    def clear(self, client: Client) -> None:
        self.discard(client, self.filters(client))

    def everyone(self) -> set[Client]:
        """Clients with the filter that matches every candle."""
        return self._clients.get((None, None, None), set())

    def route(self, candles: Sequence[Candle]) -> dict[Client, list[int]]:
        """For each client not in ``everyone()``, the positions of the candles it wants,
        in order and each once."""
        shapes = [shape for shape in self._shapes if shape]
        everyone = self.everyone()
        routed: dict[Client, list[int]] = {}
        by_key = self._clients
        for n, candle in enumerate(candles):
            for shape in shapes:
                for client in by_key.get(_key_of(candle, shape), ()):
                    if client in everyone:
                        continue
                    picks = routed.setdefault(client, [])
                    # a client matched by two of its filters still gets the candle once
                    if not picks or picks[-1] != n:
                        picks.append(n)
        return routed
