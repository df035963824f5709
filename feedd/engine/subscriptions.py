"""Subscription bookkeeping of one connection, sans-IO: what was asked, answered and refused.

The session sends the frames this builds and feeds back what the venue says; the tracker
tells it which streams became subscribed or rejected, what to ask again, and who is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import attrs

from feedd.exchanges.contract import Stream, SubscribeAck, SubscribeRejected, SubscribeRequest

#: an exchange module's ``subscribe_requests``: streams and the first request id to use
RequestBuilder = Callable[[Sequence[Stream], int], list[SubscribeRequest]]


@attrs.frozen
class Rejection:
    """What a refusal means: ``bad`` streams are given up, ``retry`` requests are to be sent."""

    bad: tuple[Stream, ...]
    retry: tuple[SubscribeRequest, ...]


@attrs.define(eq=False, slots=True)
class _Tracked:
    stream: Stream
    #: when the venue last showed the stream alive (an ack or a candle)
    last_seen: float
    subscribed: bool = False
    rejected: bool = False


class Subscriptions:
    """The streams one connection asked for, and the subscribe requests still unanswered."""

    def __init__(self, build: RequestBuilder) -> None:
        self._build = build
        # Keyed by (symbol, interval) as a candle carries them: no Stream built per candle.
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._pending: dict[str, SubscribeRequest] = {}
        self._next_id = 1

    @property
    def all_answered(self) -> bool:
        """Every request sent so far was acked or refused."""
        return not self._pending

    @property
    def subscribed_count(self) -> int:
        return sum(1 for t in self._tracked.values() if t.subscribed)

    def subscribe(self, streams: Sequence[Stream], now: float) -> list[SubscribeRequest]:
        """The requests to send for ``streams``; they count as pending from now on."""
        for stream in streams:
            self._tracked.setdefault((stream.symbol, stream.interval), _Tracked(stream, now))
        requests = self._build(list(streams), self._next_id)
        self._next_id += len(requests)
        for request in requests:
            self._pending[request.request_id] = request
        return requests

    def confirm(self, streams: Sequence[Stream], now: float) -> list[Stream]:
        """Mark ``streams`` subscribed; return those that were not yet."""
        newly = []
        for stream in streams:
            tracked = self._tracked.get((stream.symbol, stream.interval))
            if tracked is not None and not tracked.subscribed:
                tracked.subscribed = True
                tracked.last_seen = now
                newly.append(tracked.stream)
        return newly

    def heard(self, symbol: str, interval: str, now: float) -> Stream | None:
        """A candle of (symbol, interval) arrived: its stream, or None when not wanted here.

        The stream is not confirmed: its first candle is the caller's to handle, with
        :meth:`confirm` (data proves the subscription even when no ack came).
        """
        tracked = self._tracked.get((symbol, interval))
        if tracked is None or tracked.rejected:
            return None
        tracked.last_seen = now
        return tracked.stream

    def on_ack(self, event: SubscribeAck, now: float) -> list[Stream]:
        """Apply an ack; return the streams it newly subscribed."""
        if event.stream is None:
            request = self._answer(event.request_id, ())
            return self.confirm(request.streams, now) if request is not None else []
        newly = self.confirm([event.stream], now)
        # A per-stream ack answers its request once every stream of it is subscribed.
        for request in self._requests_for(event.request_id, event.stream):
            if all(self._is_subscribed(s) for s in request.streams):
                del self._pending[request.request_id]
        return newly

    def on_rejected(self, event: SubscribeRejected, now: float) -> Rejection:
        """Apply a refusal; streams of the request not named as bad are asked for again."""
        request = self._answer(event.request_id, event.streams)
        named = set(event.streams)
        if request is None:
            bad = tuple(dict.fromkeys(event.streams))
            retry: list[Stream] = []
        else:
            if named:
                bad = tuple(s for s in request.streams if s in named)
            elif len(request.streams) == 1:
                bad = request.streams
            else:
                bad = ()
            retry = [s for s in request.streams if s not in bad and not self._is_subscribed(s)]
        for stream in bad:
            tracked = self._tracked.get((stream.symbol, stream.interval))
            if tracked is not None:
                tracked.rejected = True
        requests: list[SubscribeRequest] = []
        if named:
            requests = self.subscribe(retry, now) if retry else []
        else:
            # The venue may have failed the whole request for one bad stream it did not name:
            # ask for each stream on its own to find out which.
            for stream in retry:
                requests += self.subscribe([stream], now)
        return Rejection(bad, tuple(requests))

    def silent(self, now: float, timeout: float, exempt: Collection[Stream]) -> list[Stream]:
        """Subscribed streams not heard from for more than ``timeout`` seconds."""
        return [
            t.stream
            for t in self._tracked.values()
            if t.subscribed
            and not t.rejected
            and t.stream not in exempt
            and now - t.last_seen > timeout
        ]

    def _is_subscribed(self, stream: Stream) -> bool:
        tracked = self._tracked.get((stream.symbol, stream.interval))
        return tracked is not None and tracked.subscribed

    def _requests_for(self, request_id: str | None, stream: Stream) -> list[SubscribeRequest]:
        if request_id is not None:
            request = self._pending.get(request_id)
            return [] if request is None else [request]
        # No id echoed (OKX captures from 2022 have none): the ack's arg says which request.
        return [r for r in self._pending.values() if stream in r.streams]

    def _answer(self, request_id: str | None, streams: Sequence[Stream]) -> SubscribeRequest | None:
        """Take the pending request an answer is for, if it can be told."""
        if request_id is not None:
            return self._pending.pop(request_id, None)
        # A refusal without an id that names its arg (OKX 60018) belongs to the request of it.
        for stream in streams:
            for request in self._pending.values():
                if stream in request.streams:
                    return self._pending.pop(request.request_id)
        if len(self._pending) == 1:
            # An error without an id (e.g. unparseable request) belongs to the only open one.
            return self._pending.popitem()[1]
        return None
