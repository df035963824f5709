"""What goes on the wire: subjects, JetStream message ids and the candle JSON shared with /ws."""

from __future__ import annotations

from typing import Any

from feedd.candle import Candle, Source
from feedd.candlejson import encode_candle

#: the header JetStream deduplicates on, within the stream's duplicate window
MSG_ID = "Nats-Msg-Id"
#: per-message time to live (nats-server 2.11+, on streams that allow it)
TTL = "Nats-TTL"
#: forming updates are superseded within seconds: the stream keeps them only this long
FORMING_TTL = "1m"


def subject(prefix: str, candle: Candle) -> str:
    return f"{prefix}.candles.{candle.exchange}.{candle.symbol}.{candle.interval}"


def subjects_filter(
    prefix: str, exchange: str | None = None, symbol: str | None = None, interval: str | None = None
) -> str:
    """A subject pattern for some series: ``*`` for whatever is not given."""
    return f"{prefix}.candles.{exchange or '*'}.{symbol or '*'}.{interval or '*'}"


def stream_subjects(prefix: str) -> str:
    return f"{prefix}.candles.>"


def msg_id(candle: Candle) -> str:
    """The same for every collector that publishes this closed candle: stored once."""
    return f"{candle.exchange}.{candle.symbol}.{candle.interval}.{candle.open_time}"


def payload(candle: Candle) -> bytes:
    return encode_candle(candle)


def candle_from_dict(doc: dict[str, Any]) -> Candle:
    """A candle back from its JSON (prices as the shortest decimal of the float /ws sent)."""
    return Candle(
        exchange=str(doc["exchange"]),
        symbol=str(doc["symbol"]),
        interval=str(doc["interval"]),
        open_time=int(doc["open_time"]),
        open=repr(float(doc["open"])),
        high=repr(float(doc["high"])),
        low=repr(float(doc["low"])),
        close=repr(float(doc["close"])),
        volume=repr(float(doc["volume"])),
        quote_volume=repr(float(doc["quote_volume"])),
        trades=None if doc.get("trades") is None else int(doc["trades"]),
        closed=bool(doc["closed"]),
        source=Source[str(doc.get("source", "ws")).upper()],
    )
