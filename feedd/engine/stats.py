"""Live counters of one exchange's ingest, read by /health, /status and the dashboard.

Engine tasks update these in place (single-threaded, on the event loop); readers take a
snapshot with :meth:`ExchangeStats.snapshot`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio


class StreamState(enum.StrEnum):
    PENDING = "pending"
    LIVE = "live"
    SILENT = "silent"
    REJECTED = "rejected"
    UNLISTED = "unlisted"


@attrs.define(eq=False)
class ExchangeStats:
    name: str
    state: str = "starting"
    connections: int = 0
    streams_subscribed: int = 0
    messages: int = 0
    candles: int = 0
    parse_errors: int = 0
    #: well-formed frames feedd has no use for (other channels, unsubscribe acks)
    ignored_frames: int = 0
    exchange_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    gaps_healed: int = 0
    rest_requests: int = 0
    rest_candles: int = 0
    rest_weight_used: int = 0
    rest_rate_limited: int = 0
    backfill_pending: int = 0
    last_message_at: float | None = None
    last_error: str | None = None
    stream_states: dict[str, StreamState] = attrs.field(factory=dict)
    stream_errors: dict[str, str] = attrs.field(factory=dict)
    #: stream key -> share of its missing candles fetched so far, while a backfill runs
    backfilling: dict[str, float] = attrs.field(factory=dict)
    #: the venue's tradable symbols from the last instrument refresh (None: not known yet)
    listed: frozenset[str] | None = None
    listed_at_ms: int | None = None

    def set_stream(self, key: str, state: StreamState, error: str | None = None) -> None:
        self.stream_states[key] = state
        if error is None:
            self.stream_errors.pop(key, None)
        else:
            self.stream_errors[key] = error

    def last_message_age(self) -> float | None:
        """Seconds since the last frame of any connection (None: none yet)."""
        if self.last_message_at is None:
            return None
        return round(trio.current_time() - self.last_message_at, 3)

    def snapshot(self) -> dict[str, Any]:
        out = attrs.asdict(
            self, filter=lambda a, _: a.name not in {"last_message_at", "listed", "listed_at_ms"}
        )
        out["last_message_age_s"] = self.last_message_age()
        out["stream_states"] = {k: str(v) for k, v in self.stream_states.items()}
        return out
