"""The sans-IO contract every exchange module fulfils, and the values it exchanges with the engine.

An exchange module is constants and pure functions: it builds URLs, frames and REST requests,
and parses frames and bodies into the typed values below. It never does I/O, so the engine
(connection, supervisor, backfill) can drive every venue the same way, and mypy checks each
module against :class:`ExchangeModule`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import quote

import attrs

from feedd.candle import Candle


@attrs.frozen(slots=True)
class Stream:
    """One subscription: a canonical symbol (``BTCUSDT``) at a canonical interval (``1m``)."""

    symbol: str
    interval: str


@attrs.frozen(slots=True)
class Limits:
    """What one venue allows; the engine shards and paces from these numbers alone."""

    #: most streams one WebSocket connection may carry
    streams_per_connection: int
    #: most client frames per second on one connection (pings and subscribes count)
    client_msgs_per_second: float
    #: most subscribe/unsubscribe requests per connection per hour (None: unlimited)
    subscribe_requests_per_hour: int | None
    #: most new connections per second from one IP
    connects_per_second: float
    #: the exchange closes a connection after this many seconds (None: no limit)
    connection_lifetime_s: float | None
    #: REST request weight allowed per minute per IP
    rest_weight_per_minute: int


@attrs.frozen(slots=True)
class SubscribeRequest:
    """One subscribe frame and the streams it asks for, so acks and errors can be attributed."""

    request_id: str
    frame: str
    streams: tuple[Stream, ...]


@attrs.frozen(slots=True)
class RestRequest:
    """A GET the engine performs against the exchange's REST base URL."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    #: request weight against the venue's per-minute budget
    weight: int = 1
    #: names of params whose values came from the venue already percent-encoded (Bybit's
    #: ``nextPageCursor``): they go back as given, since encoding them again changes them
    encoded: frozenset[str] = frozenset()

    def query(self) -> str:
        """The query string as sent: values percent-encoded as UTF-8, except ``encoded`` ones."""
        return "&".join(
            quote(name, safe="")
            + "="
            + (_as_given(value) if name in self.encoded else quote(value, safe=""))
            for name, value in self.params
        )


#: a ``%`` that starts no escape
_NOT_AN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _as_given(value: str) -> str:
    """An already-encoded value: unchanged when well formed; a stray ``%`` or a character a
    query may not carry raw (``&``, ``#``, space, non-ASCII) is escaped, escapes are kept."""
    return quote(_NOT_AN_ESCAPE.sub("%25", value), safe="%")


# ----------------------------------------------------------------------------- frame events


@attrs.frozen(slots=True)
class SubscribeAck:
    """The exchange accepted a subscribe request (``stream`` set where it acks per stream)."""

    request_id: str | None
    stream: Stream | None = None


@attrs.frozen(slots=True)
class SubscribeRejected:
    """The exchange refused a subscribe request.

    ``streams`` names the offending streams when the exchange says which (Bybit's
    ``topic:…``); otherwise the whole request identified by ``request_id`` failed.
    """

    request_id: str | None
    streams: tuple[Stream, ...]
    code: str
    message: str


@attrs.frozen(slots=True)
class Pong:
    """An answer to our application-level ping."""


@attrs.frozen(slots=True)
class ServerPing:
    """The server sent an application-level ping and wants ``reply`` back."""

    reply: str


@attrs.frozen(slots=True)
class Notice:
    """An exchange notice; ``reconnect`` asks the engine to rotate the connection soon."""

    code: str
    message: str
    reconnect: bool


@attrs.frozen(slots=True)
class ErrorEvent:
    """An error frame not tied to a subscribe request."""

    code: str
    message: str


@attrs.frozen(slots=True)
class Ignored:
    """A well-formed frame feedd has no use for: another channel's push or ack, an unsubscribe
    ack. Counted apart from parse errors, which then mean that something is wrong."""

    reason: str


Event = (
    Candle | SubscribeAck | SubscribeRejected | Pong | ServerPing | Notice | ErrorEvent | Ignored
)


@attrs.frozen(slots=True)
class InstrumentsPage:
    """Tradable USDT perpetuals (canonical symbols) from one instruments page."""

    symbols: tuple[str, ...]
    next_cursor: str | None


# ----------------------------------------------------------------------------- bulk archive


@attrs.frozen(slots=True)
class ArchiveFile:
    """One file of a venue's bulk archive: its path and its checksum's path under the archive
    base URL (already percent-encoded), and the candle open times it covers, both inclusive."""

    path: str
    checksum_path: str
    first_open_ms: int
    last_open_ms: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class ArchivePlanner(Protocol):
    """The published files that cover open times ``start_ms`` .. ``end_ms`` as of ``now_ms``,
    oldest first; open times it leaves out (today, unsupported intervals) are REST's."""

    def __call__(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int
    ) -> list[ArchiveFile]: ...


class ArchiveParser(Protocol):
    """The closed candles (source ARCHIVE) of one file's unzipped CSV, oldest first."""

    def __call__(self, data: bytes, symbol: str, interval: str) -> list[Candle]: ...


@attrs.frozen(slots=True)
class ArchiveLayout:
    """A venue's bulk archive of closed candles: where it lives, which files cover a range,
    how to read a file and its checksum. The engine downloads; the module only plans and
    parses."""

    default_url: str
    #: canonical intervals the archive has files for
    intervals: frozenset[str]
    files: ArchivePlanner
    parse_csv: ArchiveParser
    #: the SHA-256 hex digest named by a checksum file's text
    checksum_of: Callable[[str], str]
    #: the largest zip (and unzipped CSV) the engine accepts; a month of 1m is about 2 MB zipped
    max_file_bytes: int = 64 * 1024 * 1024


# ----------------------------------------------------------------------------- the module


class ExchangeModule(Protocol):
    """What the engine needs from an exchange module (see DESIGN.md, "Module contract")."""

    NAME: str
    DEFAULT_WS_URL: str
    DEFAULT_REST_URL: str
    #: canonical interval -> native name, only for intervals the venue offers
    INTERVALS: Mapping[str, str]
    LIMITS: Limits
    #: seconds between application-level pings (None: the server pings us)
    PING_INTERVAL_S: float | None
    #: seconds without any inbound frame after which the connection is presumed dead
    SILENCE_TIMEOUT_S: float
    #: the venue's bulk archive of history, if it publishes one
    ARCHIVE: ArchiveLayout | None

    # symbols
    def to_native(self, symbol: str) -> str: ...
    def from_native(self, native: str) -> str: ...

    # outgoing WebSocket
    def ws_url(self, base: str) -> str: ...
    def subscribe_requests(
        self, streams: Sequence[Stream], first_id: int
    ) -> list[SubscribeRequest]: ...
    def ping_frame(self, seq: int) -> str | None: ...

    # incoming WebSocket
    def parse_frame(self, text: str) -> list[Event]: ...

    # REST
    def kline_requests(
        self, stream: Stream, start_ms: int, end_ms: int, now_ms: int
    ) -> list[RestRequest]: ...
    def parse_klines(
        self, stream: Stream, status: int, body: bytes, server_time_ms: int
    ) -> list[Candle]: ...
    def time_request(self) -> RestRequest: ...
    def parse_time(self, status: int, body: bytes) -> int: ...
    def instruments_request(self, cursor: str | None) -> RestRequest: ...
    def parse_instruments(self, status: int, body: bytes) -> InstrumentsPage: ...
    def used_weight(self, headers: Mapping[str, str]) -> int | None: ...
