"""The publishing hot path against a real nats-server: framed windows are stored as nats-py
would store them, acks are counted off the parser (duplicates too, refusals seen), and the
connection's other subscriptions still get their messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import orjson
import pytest
import trio
from nats.js.api import StreamConfig
from natsserver import running_nats

from feedd.candle import Candle, Source
from feedd.publish import wire
from feedd.publish.fastpath import Acks, Frames, send, take_acks


def c(symbol: str, minute: int, closed: bool = True) -> Candle:
    return Candle("binance_futures", symbol, "1m", minute * 60_000, "1.5", "2", "0.5", "1.25",
                  "10", "15", 7, closed, Source.WS)  # fmt: skip


CANDLES = [c(s, m) for m in range(3) for s in ("BTCUSDT", "ETHUSDT")]


def exchange(url: str) -> dict[str, object]:
    """Blocking (asyncio in this thread): publish through the hot path, return what came back."""

    async def main() -> dict[str, object]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            config = StreamConfig(
                name="T", subjects=["t.candles.>"], duplicate_window=60, allow_msg_ttl=True
            )
            await js.add_stream(config)
            watcher = await nc.subscribe("t.candles.>")  # a plain nats-py subscription
            acks = Acks()
            reply = await take_acks(nc, acks)
            frames = Frames("t")
            acks.expect(len(CANDLES) + 1)
            await send(nc, frames.closed([*CANDLES, CANDLES[0]], reply))  # one twice
            await asyncio.wait_for(acks.all_in.wait(), 10)
            first = (acks.received, acks.error)
            await send(nc, frames.forming([c("BTCUSDT", 3, closed=False)], ttl=True))
            seen = [await watcher.next_msg(timeout=10) for _ in range(len(CANDLES) + 2)]
            stored = [await js.get_msg("T", seq) for seq in range(1, len(CANDLES) + 2)]
            acks.expect(1)
            await send(nc, Frames("elsewhere").closed(CANDLES[:1], reply))  # no stream there
            await asyncio.wait_for(acks.all_in.wait(), 10)
            return {
                "first": first,
                "refused": acks.error,
                "seen": [(m.subject, m.data) for m in seen],
                "stored": [(m.subject, m.headers, m.data) for m in stored],
            }
        finally:
            await nc.close()

    return asyncio.run(main())


async def test_framed_windows_store_ack_and_pass_other_messages_on(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server:
        got = await trio.to_thread.run_sync(exchange, server.url)
    assert got["first"] == (len(CANDLES) + 1, None)  # the duplicate is acked as well
    assert got["refused"] is not None and "503" in str(got["refused"])
    want = [(wire.subject("t", x), wire.payload(x)) for x in CANDLES]
    forming = c("BTCUSDT", 3, closed=False)
    last = (wire.subject("t", forming), wire.payload(forming))
    assert got["seen"] == [*want, want[0], last]
    stored = got["stored"]
    assert isinstance(stored, list)
    # the duplicate was dropped by its message id; the forming update carries its TTL
    assert [(s, d) for s, _, d in stored] == [*want, last]
    assert [h[wire.MSG_ID] for _, h, _ in stored[:-1]] == [wire.msg_id(x) for x in CANDLES]
    assert stored[-1][1][wire.TTL] == wire.FORMING_TTL
    assert orjson.loads(stored[0][2])["committed"] is True


def test_a_subject_with_a_blank_is_refused_before_it_reaches_the_wire() -> None:
    with pytest.raises(nats.errors.BadSubjectError):
        Frames("t").closed([c("BTC USDT", 0)], b"_INBOX.x")
