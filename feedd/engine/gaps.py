"""Gap detection on one connection's candle streams, sans-IO: which closed candles it missed.

Fed every candle a session accepts, it answers with the REST heal the candle calls for, if any.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from feedd.candle import Candle
from feedd.exchanges.contract import Stream
from feedd.intervals import next_open


@attrs.frozen
class HealRequest:
    """Fetch closed candles of ``stream`` over REST from ``since_ms``.

    ``since_ms`` None means "after the newest stored closed candle older than ``seen_ms``":
    ``seen_ms`` is the first open time a new session saw on the stream, and the candles it
    streams from there on may be stored before the heal looks, hiding the hole behind them.
    """

    stream: Stream
    since_ms: int | None
    seen_ms: int | None = None

    @property
    def first_candle(self) -> bool:
        """Asked for by a stream's first candle on a connection (see :meth:`Gaps.observe`)."""
        return self.seen_ms is not None


@attrs.define(eq=False, slots=True)
class _Tail:
    stream: Stream
    #: open time of the newest candle seen
    open_time: int
    #: whether the candle at ``open_time`` was seen closed
    closed: bool


class Gaps:
    """The newest candle of every stream that spoke on one connection, and the holes behind."""

    def __init__(self) -> None:
        # Keyed by (symbol, interval) as a candle carries them: no Stream built per candle.
        self._tails: dict[tuple[str, str], _Tail] = {}

    def observe(self, candle: Candle) -> HealRequest | None:
        """Record ``candle`` and return the heal it calls for.

        A stream's first candle asks for everything below it that is not stored yet (a drop,
        a stall across the reconnect, the bootstrap's end: no connection saw those); that
        request has ``first_candle`` set. Later, a newer candle asks for the previous one when
        it never closed on the stream, or for the whole candles skipped between the two.
        Older candles change nothing, and a forming update never reopens a closed candle.
        """
        open_time = candle.open_time
        tail = self._tails.get((candle.symbol, candle.interval))
        if tail is None:
            stream = Stream(candle.symbol, candle.interval)
            self._tails[(candle.symbol, candle.interval)] = _Tail(stream, open_time, candle.closed)
            return HealRequest(stream, None, seen_ms=open_time)
        previous = tail.open_time
        if open_time > previous:
            heal = None
            if not tail.closed:
                heal = HealRequest(tail.stream, previous)
            else:
                expected = next_open(candle.interval, previous)
                if open_time > expected:
                    heal = HealRequest(tail.stream, expected)
            tail.open_time = open_time
            tail.closed = candle.closed
            return heal
        if open_time == previous and not tail.closed:
            tail.closed = candle.closed
        return None

    def spoke(self) -> Iterator[Stream]:
        """The streams that sent at least one candle."""
        return (tail.stream for tail in self._tails.values())

    def last_open_times(self) -> dict[Stream, int]:
        """The open time of the newest candle seen on each stream that spoke."""
        return {tail.stream: tail.open_time for tail in self._tails.values()}
