"""Read feedd's live candles from NATS JetStream with nats-py alone (no feedd installed).

Replays the closed candles of the last hour for a subject pattern, then follows live ones.
Each message is one candle, the same JSON object feedd's /ws sends; closed candles are stored
once in the stream (JetStream deduplicates the collectors' copies by message id), forming
updates may be dropped under load and expire from the stream after a minute.

    pip install nats-py
    python scripts/nats_consumer_example.py nats://127.0.0.1:4222 'feedd.candles.*.BTCUSDT.1m'
    python scripts/nats_consumer_example.py nats://user:pass@host:4222 --since 7200

Subjects are <prefix>.candles.<exchange>.<symbol>.<interval>; the stream is FEEDD_CANDLES
unless publish.nats.stream says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy


async def follow(url: str, subject: str, stream: str, since_s: float) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=since_s)
    # An ordered consumer: ephemeral, in stream order, recreated by the client after a gap.
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start),
    )
    last: dict[str, int] = {}
    try:
        async for msg in sub.messages:
            candle = json.loads(msg.data)
            if not candle["closed"]:
                continue  # forming updates: keep them for a live price, skip for history
            # A gap healed by REST after a venue outage arrives after the live candles around
            # it: key by (subject, open_time) rather than trusting arrival order alone.
            if candle["open_time"] <= last.get(msg.subject, -1):
                print("late (healed) candle:", end=" ")
            last[msg.subject] = max(last.get(msg.subject, -1), candle["open_time"])
            when = dt.datetime.fromtimestamp(candle["open_time"] / 1000, dt.UTC)
            print(
                f"{when:%Y-%m-%d %H:%M} {candle['exchange']} {candle['symbol']} "
                f"{candle['interval']} close={candle['close']} volume={candle['volume']}"
            )
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="nats://[user:pass@]host:port")
    parser.add_argument("subject", nargs="?", default="feedd.candles.>", help="subject pattern")
    parser.add_argument("--stream", default="FEEDD_CANDLES")
    parser.add_argument("--since", type=float, default=3600.0, help="seconds to replay (3600)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(args.url, args.subject, args.stream, args.since))


if __name__ == "__main__":
    main()
