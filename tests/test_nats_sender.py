"""The publishing thread against a real nats-server cut mid-window: nothing lost, nothing
doubled, each series in order after the catch-up."""

from __future__ import annotations

import threading
from pathlib import Path

import trio
from natsserver import closed_by_subject, read_stream, running_nats

from feedd import config
from feedd.candle import Candle, Source
from feedd.publish.backlog import Backlog
from feedd.publish.sender import Sender

SERIES = 50
PER_SERIES = 200


class WatchedBacklog(Backlog):
    """Tells the test when the broker acknowledged a first window."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.first_ack = threading.Event()

    def done(self, window: list[Candle]) -> None:
        super().done(window)
        self.first_ack.set()


def candles() -> list[Candle]:
    return [
        Candle("binance_futures", f"S{s}USDT", "1m", 60_000 * t, "1", "2", "0.5", "1.5", "10",
               "15", 7, True, Source.WS)
        for t in range(PER_SERIES)
        for s in range(SERIES)
    ]  # fmt: skip


async def test_broker_cut_mid_window_loses_and_doubles_nothing(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server:
        section = {"nats": {"url": server.url, "max_age": "1d"}}
        settings = config.parse({"publish": section}).config.publish
        assert settings is not None and settings.nats is not None
        backlog = WatchedBacklog(SERIES * PER_SERIES)
        sender = Sender(settings.nats, backlog)
        backlog.add(candles())
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        try:
            with trio.fail_after(120):
                await trio.to_thread.run_sync(backlog.first_ack.wait)
                await server.stop()  # windows in flight: some stored, some not, acks lost
                held = backlog.closed
                await server.start()
                sender.drain()  # ends once the broker acknowledged everything
                await trio.to_thread.run_sync(thread.join)
        finally:
            sender.abort()
        messages = await trio.to_thread.run_sync(read_stream, server.url, "FEEDD_CANDLES")
    assert 0 < held < SERIES * PER_SERIES  # the cut came mid-run
    assert sender.state.last_error is not None
    by_subject = closed_by_subject(messages)
    assert len(by_subject) == SERIES
    for subject, times in by_subject.items():
        assert times == [60_000 * t for t in range(PER_SERIES)], subject
    assert backlog.closed == 0 and backlog.dropped_closed == 0


async def test_an_idle_thread_is_woken_by_an_offer_and_ends_on_drain(tmp_path: Path) -> None:
    async with running_nats(tmp_path) as server:
        settings = config.parse({"publish": {"nats": {"url": server.url}}}).config.publish
        assert settings is not None and settings.nats is not None
        backlog = WatchedBacklog(100)
        sender = Sender(settings.nats, backlog)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        try:
            with trio.fail_after(30):
                await trio.to_thread.run_sync(sender.wait_ready, abandon_on_cancel=True)
                for batch in (candles()[:10], candles()[10:20]):
                    backlog.first_ack.clear()
                    backlog.add(batch)  # as Publisher.offer does: add, then wake
                    sender.wake()
                    await trio.to_thread.run_sync(backlog.first_ack.wait, abandon_on_cancel=True)
                sender.drain()  # the thread is idle: drain must wake it to end
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        finally:
            sender.abort()
    assert sender.state.published_closed == 20 and backlog.closed == 0
