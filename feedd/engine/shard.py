"""A shard: one slice of an exchange's streams kept alive across disconnects and rotations.

Reconnects use capped, jittered backoff that resets only after a healthy connection. A
rotation (lifetime or a venue notice) is make-before-break: the new session is subscribed
before the old one is cancelled, so no update is missed. When a connection dies, its streams
are healed from the last candle each saw on it as soon as the next session is subscribed,
and again from the stored tail below the first candle each speaks on the new session (see
Gaps.observe): that one also covers what closed while the new session was opening.
"""

from __future__ import annotations

import trio

from feedd.engine.backoff import Backoff
from feedd.engine.context import ExchangeContext, HealRequest, stream_key
from feedd.engine.session import Session, StreamsSilent
from feedd.errors import TransportError
from feedd.exchanges.contract import Stream

#: a stream that stays silent for this many sessions in a row is no longer a reason to reconnect
SILENT_STRIKES = 2


async def run_shard(
    ctx: ExchangeContext,
    streams: tuple[Stream, ...],
    *,
    backoff: Backoff | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``streams`` subscribed until cancelled; ready at once (the venue may be down)."""
    backoff = backoff or Backoff()
    strikes: dict[Stream, int] = {}
    #: per stream, the newest open time any dead session of this shard saw
    last_seen: dict[Stream, int] = {}
    current: Session | None = None
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            exempt = frozenset(s for s, n in strikes.items() if n >= SILENT_STRIKES)
            session = Session(ctx, streams, exempt)
            try:
                await nursery.start(session.run)
            except TransportError as exc:
                ctx.stats.last_error = str(exc)
                ctx.log.warning("%s connect failed: %s", ctx.module.NAME, exc)
                # When this was a rotation attempt, the old session keeps serving meanwhile.
                await trio.sleep(backoff.next_delay())
                continue
            if current is not None:
                if current.alive:
                    ctx.stats.rotations += 1
                    ctx.log.info("%s rotated a connection (make-before-break)", ctx.module.NAME)
                else:
                    # The old connection died: heal each stream from the last candle it saw
                    # there, now, rather than only once the stream speaks again (an illiquid
                    # or delisted symbol may not, for a long time).
                    last_seen.update(current.last_open_times())
                    for stream, open_time in last_seen.items():
                        await ctx.heal_send.send(HealRequest(stream, open_time))
                current.cancel()
            current = session
            ctx.stats.state = "running"
            await session.attention.wait()
            if session.alive and session.rotate_requested:
                continue  # open the replacement while this one keeps streaming
            _count_strikes(session, strikes)
            ctx.stats.reconnects += 1
            assert session.subscribed_at is not None and session.ended_at is not None
            backoff.connection_lasted(session.ended_at - session.subscribed_at)
            if isinstance(session.error, StreamsSilent):
                ctx.log.warning("%s: %s", ctx.module.NAME, session.error)
            await trio.sleep(backoff.next_delay())


def _count_strikes(session: Session, strikes: dict[Stream, int]) -> None:
    for stream in session.spoke:
        strikes.pop(stream, None)
    if isinstance(session.error, StreamsSilent):
        for stream in session.error.streams:
            strikes[stream] = strikes.get(stream, 0) + 1
            if strikes[stream] == SILENT_STRIKES:
                session.ctx.log.warning(
                    "%s %s stays silent; no longer reconnecting for it",
                    session.ctx.module.NAME,
                    stream_key(stream),
                )
