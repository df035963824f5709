"""The live hub behind ``/ws``: candles, status and log lines fanned out to clients.

Forming candles go out as soon as the writer takes them in (``"committed": false``); closed
ones only once committed (``"committed": true``). Each client has a bounded outbox.
Publishing never waits: a client whose outbox is full is marked as overflowed and its handler
closes it (1008), so a slow reader can never slow ingest or the other clients. Messages are
serialised once per batch and shared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson
import trio

from feedd.candle import Candle, Source
from feedd.candlejson import CandleJson, candle_json, candles_message, encode_json
from feedd.monitor.logring import LogLine, LogRing
from feedd.store.writer import Writer
from feedd.web.filters import FilterIndex

OUTBOX = 256
#: a client that fell behind gets its queued candle messages merged up to this size
COALESCE_BYTES = 256 * 1024
_CANDLES_HEAD = '{"type":"candles","data":['
_CANDLES_TAIL = "]}"
#: forming updates go out at most once per FORMING_EVERY_S (the first after a pause at once),
#: and with many clients less often, about FORMING_SENDS_PER_S messages a second in all: each
#: message costs a socket send per client, the same whatever its size
FORMING_EVERY_S = 0.002
FORMING_SENDS_PER_S = 1000.0
#: a loop that wakes the hub later than its interval is short of CPU: the interval doubles,
#: up to this, and halves back once the loop keeps time
FORMING_MAX_S = 0.25
#: a client with this many messages queued is behind: it skips forming updates (newer ones
#: follow) so that its outbox keeps room for closed candles
FORMING_BACKLOG = OUTBOX // 4
#: a client that stays behind this long reads slower than the feed (or not at all): it is cut
#: off like an overflowing one. Skipping forming updates alone could keep a silent client's
#: socket and outbox for ever, its outbox filling only with the odd closed candle.
BEHIND_LIMIT_S = 10.0
STATUS_EVERY_S = 1.0
LOGS_EVERY_S = 0.25
SeriesKey = tuple[str, str, str]


def log_dict(line: LogLine) -> dict[str, Any]:
    return attrs.asdict(line)


class Client:
    """One /ws connection's subscriptions and outbox."""

    def __init__(self, outbox: int = OUTBOX) -> None:
        self.outbox_send, self.outbox_recv = trio.open_memory_channel[str](outbox)
        self.status = False
        #: last log sequence sent (None: not subscribed to logs)
        self.logs_after: int | None = None
        self.overflowed = trio.Event()
        #: forming-update messages skipped while behind
        self.skipped = 0
        #: since when the outbox has held FORMING_BACKLOG messages or more
        self._behind_since: float | None = None

    def offer(self, message: str, *, skippable: bool = False) -> None:
        if self.overflowed.is_set():
            return
        used = self.outbox_send.statistics().current_buffer_used
        if used >= FORMING_BACKLOG:
            since = self._behind_since
            if since is not None and trio.current_time() - since >= BEHIND_LIMIT_S:
                self.overflowed.set()
                return
            if skippable:
                self.skipped += 1
                return
        else:
            self._behind_since = None
        try:
            self.outbox_send.send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.overflowed.set()
            return
        if used + 1 >= FORMING_BACKLOG and self._behind_since is None:
            self._behind_since = trio.current_time()

    async def next_messages(self) -> list[str]:
        """Wait for the next message, then take everything queued behind it, merged.

        A client that keeps up gets each message as it was published. One that fell behind
        (or whose socket was slow to take the last message) gets its queued candle messages
        as one: a send costs the server about the same whatever its size, so a loop
        overloaded by fan-out sends fewer, larger messages instead of falling further behind.
        Raises EndOfChannel once the outbox is closed and empty."""
        messages = [await self.outbox_recv.receive()]
        while True:
            try:
                messages.append(self.outbox_recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return coalesce(messages)


def message(kind: str, data: object) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode()


class SeriesNews:
    """The newest of one series the hub has seen; changed in place, once per candle."""

    __slots__ = ("closed_seen", "last", "last_closed", "last_seen")

    def __init__(self) -> None:
        #: newest live candle, for the last price in /status, and when it was committed (ms)
        self.last: Candle | None = None
        self.last_seen = 0
        #: newest committed closed open time (live or backfilled), for freshness in /metrics
        self.last_closed = -1
        #: newest closed open time, committed or only ingested: forming updates at or before
        #: it are stale
        self.closed_seen = -1


class LiveHub:
    def __init__(self, writer: Writer, logs: LogRing, status: Callable[[], dict[str, Any]]):
        self._writer = writer
        self._logs = logs
        self._status = status
        self.clients: set[Client] = set()
        #: which clients want which candles
        self.filters = FilterIndex[Client]()
        #: what the hub knows of each series: one look-up per candle, not four
        self._series: dict[SeriesKey, SeriesNews] = {}
        #: clients closed because they did not keep up
        self.overflows = 0

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self.filters.clear(client)
        if client.overflowed.is_set():
            self.overflows += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with (
            self._writer.open_commit_listener() as committed,
            self._writer.open_ingest_listener() as ingested,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_status)
                nursery.start_soon(self._run_logs)
                nursery.start_soon(self.run_ingested, ingested)
                task_status.started()
                async for batch in committed:
                    self.publish(batch)

    async def run_ingested(self, ingested: trio.MemoryReceiveChannel[Sequence[Candle]]) -> None:
        """Publish forming updates as they come, the first after a quiet spell at once, later
        ones with what arrived meanwhile (see FORMING_EVERY_S)."""
        due, wait = -math.inf, FORMING_EVERY_S
        async for candles in ingested:
            late = 0.0
            if trio.current_time() < due:
                await trio.sleep_until(due)
                late = trio.current_time() - due
            batch = list(candles)
            while True:
                try:
                    batch.extend(ingested.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self.publish_ingested(batch)
            # Under load every message's sends compete with ingest for the loop: fewer,
            # larger ones keep the sessions reading (their silence watchdogs fire otherwise).
            least = max(FORMING_EVERY_S, len(self.clients) / FORMING_SENDS_PER_S)
            wait = min(wait * 2, FORMING_MAX_S) if late > wait else max(least, wait / 2)
            due = trio.current_time() + wait

    def publish(self, batch: Sequence[Candle]) -> None:
        """A committed batch: closed live candles go to clients, marked committed (forming
        ones went out when ingested, see ``publish_ingested``)."""
        # Only live stream updates: backfilled history is read from /ohlcv, and pushing a
        # bootstrap's hundreds of thousands of candles would drown every dashboard.
        # One pass: the loop runs this for every committed batch (every row at full load).
        series = self._series
        now_ms = int(time.time() * 1000)
        ws = Source.WS
        closed_live: list[Candle] = []
        for candle in batch:
            key = (candle.exchange, candle.symbol, candle.interval)
            news = series.get(key)
            if news is None:
                news = series[key] = SeriesNews()
            open_time = candle.open_time
            if candle.closed:
                if news.last_closed < open_time:
                    news.last_closed = open_time
                if news.closed_seen < open_time:
                    news.closed_seen = open_time
            if candle.source is ws:
                known = news.last
                if known is None or known.open_time <= open_time:
                    news.last, news.last_seen = candle, now_ms
                if candle.closed:
                    closed_live.append(candle)
        self._fan_out(closed_live, committed=True)

    def publish_ingested(self, batch: Sequence[Candle]) -> None:
        """Candles as the writer took them in, oldest first: forming live updates go to
        clients at once, marked not committed; closed ones wait for their commit.

        A forming update of a minute already closed (seen here or committed, whichever this
        hub learnt first) is dropped: delivered after the closed candle, it would read as
        newer. The newest update per candle is kept when several queued up."""
        if not self.filters:
            # Nobody to tell. The closes seen here are only a head start: the commit path
            # records each close before the client can have it.
            return
        series = self._series
        forming: dict[tuple[str, str, str, int], Candle] = {}
        for candle in batch:
            key = (candle.exchange, candle.symbol, candle.interval)
            news = series.get(key)
            if candle.closed:
                if news is None:
                    news = series[key] = SeriesNews()
                if news.closed_seen < candle.open_time:
                    news.closed_seen = candle.open_time
            elif candle.source == Source.WS and (
                news is None or news.closed_seen < candle.open_time
            ):
                forming[candle.key] = candle
        self._fan_out(list(forming.values()), committed=False)

    def last_price(self, key: SeriesKey) -> tuple[Candle, int] | None:
        """The newest live candle of a series and when it was committed (ms), for /status."""
        news = self._series.get(key)
        if news is None or news.last is None:
            return None
        return news.last, news.last_seen

    @property
    def last_closed(self) -> dict[SeriesKey, int]:
        """The newest committed closed open time per series (live or backfilled), for
        freshness in /metrics."""
        return {k: n.last_closed for k, n in self._series.items() if n.last_closed >= 0}

    def _fan_out(self, live: list[Candle], *, committed: bool) -> None:
        if not live or not self.filters:
            return
        # The loop runs this at every commit (a batch of closed candles) and every forming
        # window: one dumps of the whole list for the clients that take everything; a candle
        # on its own only when a filtering client picks it.
        skippable = not committed
        everyone = self.filters.everyone()
        wire: list[CandleJson] | None = None
        if everyone:
            wire = [candle_json(candle, committed=committed) for candle in live]
            shared = candles_message(wire)
            for client in everyone:
                client.offer(shared, skippable=skippable)
        encoded: dict[int, bytes] = {}

        def encode(n: int) -> bytes:
            text = encoded.get(n)
            if text is None:
                fields = candle_json(live[n], committed=committed) if wire is None else wire[n]
                text = encoded[n] = encode_json(fields)
            return text

        for client, picks in self.filters.route(live).items():
            client.offer(_candles_message([encode(n) for n in picks]), skippable=skippable)

    def send_logs(self, client: Client) -> None:
        if client.logs_after is None:
            return
        lines = self._logs.since(client.logs_after)
        if lines:
            client.logs_after = lines[-1].seq
            client.offer(message("logs", [log_dict(line) for line in lines]))

    async def _run_status(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_S)
            subscribers = [c for c in self.clients if c.status]
            if subscribers:
                text = message("status", self._status())
                for client in subscribers:
                    client.offer(text)

    async def _run_logs(self) -> None:
        while True:
            await trio.sleep(LOGS_EVERY_S)
            for client in list(self.clients):
                self.send_logs(client)


def coalesce(messages: list[str], limit: int = COALESCE_BYTES) -> list[str]:
    """Merge runs of consecutive candle messages into one (up to ``limit`` bytes), keeping
    the order of everything; candles stay in publication order, so the newest update of a
    candle is still the last one the client reads."""
    out: list[str] = []
    run: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if len(run) == 1:
            out.append(run[0])
        elif run:
            bodies = (m[len(_CANDLES_HEAD) : -len(_CANDLES_TAIL)] for m in run)
            out.append(_CANDLES_HEAD + ",".join(bodies) + _CANDLES_TAIL)
        run.clear()
        size = 0

    for text in messages:
        if not text.startswith(_CANDLES_HEAD):
            flush()
            out.append(text)
            continue
        if run and size + len(text) > limit:
            flush()
        run.append(text)
        size += len(text)
    flush()
    return out


def _candles_message(encoded: list[bytes]) -> str:
    return _CANDLES_HEAD + b",".join(encoded).decode() + _CANDLES_TAIL
