"""The simulator's settings (one frozen value) and the shared context every venue reads.

Times in settings are trio seconds (real seconds outside tests) unless the name says sim ms.
"""

from __future__ import annotations

import attrs

from feedd.sim.clock import DEFAULT_START_MS, SimClock
from feedd.sim.market import Market

VENUES: tuple[str, ...] = ("binance_futures", "bybit_futures", "okx_futures")


@attrs.frozen(slots=True)
class SimSettings:
    """How the simulator runs; every field has a default suited to tests."""

    seed: int = 1
    #: sim milliseconds per real millisecond (60: a minute per second)
    speed: float = 60.0
    #: sim time at start; None means the wall clock (the CLI's default)
    start_ms: int | None = DEFAULT_START_MS
    venues: tuple[str, ...] = VENUES
    host: str = "127.0.0.1"
    #: 0: every venue on an ephemeral port; else venue i listens on port_base + i
    port_base: int = 0
    #: forming updates of one stream go out at most this often (real seconds)
    update_interval_s: float = 0.25
    #: Binance: server ping frames every this many seconds, drop after pong_timeout_s silence
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    #: Binance: inbound messages per second before the connection is dropped (0: no limit)
    max_inbound_per_s: int = 10
    #: Binance: streams per connection
    max_streams: int = 200
    #: Bybit: cut a connection after this long without a ping or data
    bybit_idle_s: float = 600.0
    #: OKX: close with 4004 after this long without a subscription or data
    okx_idle_s: float = 30.0
    #: OKX: subscribe + unsubscribe requests per connection per hour
    okx_requests_per_hour: int = 480
    #: Binance REST weight per sim minute
    rest_weight_per_minute: int = 2400
    #: symbols in the instrument lists (Bybit pages at 500, so > 500 exercises paging)
    universe_size: int = 600
    unlisted: frozenset[str] = frozenset()
    #: benchmark mode: forming frames from templates as fast as the client reads
    bench: bool = False
    #: benchmark total updates per second across a venue's connections (0: unpaced)
    bench_rate: float = 0.0
    #: benchmark frames are closed candles, each opening one interval after the stream's last,
    #: so that every update is a new row (forming frames of one candle coalesce in the writer)
    bench_closed: bool = False
    bench_log_size: int = 2_000_000
    #: days of candle history before the start (REST and truth serve nothing older)
    history_days: float = 30.0
    #: close every connection this many seconds after it opens (None: never)
    lifetime_s: float | None = None
    #: (symbol, first, last open time in sim ms): no candle of ``symbol`` opening in
    #: [first, last] exists on any venue, as after a trading halt: REST pages, archives, the
    #: live stream and the truth all leave it out
    holes: tuple[tuple[str, int, int], ...] = ()


class SimContext:
    """What venues share: settings, the clock and the market."""

    def __init__(self, settings: SimSettings, clock: SimClock, market: Market) -> None:
        self.settings = settings
        self.clock = clock
        self.market = market
