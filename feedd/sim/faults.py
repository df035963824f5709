"""Scriptable misbehaviour of one venue: stalls, drops, garbage, rejections, REST throttling.

Each venue owns one ``Faults``; methods act at once on live connections or arm a one-shot
fault the venue consults as it pushes frames or answers REST. ``apply`` maps the JSON of
``POST /_sim/fault`` (and the CLI's ``--fault``) onto the same methods.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import attrs
import trio

from feedd.sim.wsserver import Gate

#: ``send_oversized``'s default: past feedd's 4 MiB WebSocket message limit
OVERSIZED_BYTES = 5 * 1024 * 1024

GARBAGE: dict[str, bytes] = {
    "not_json": b"<html>502 Bad Gateway</html>",
    "truncated": b'{"e":"kline","E":17724621000',
    "wrong_types": b'{"topic":17,"data":"x","e":"kline","k":[],"arg":null,"result":7,"id":"?"}',
}


class FaultTarget(Protocol):
    """What faults need from a venue's live WebSocket sessions."""

    def abort_all(self) -> int: ...
    def close_all(self, code: int, reason: str) -> int: ...
    def announce_close_all(self, after_s: float) -> int: ...
    def send_all_nowait(self, payload: bytes) -> int: ...


@attrs.frozen(slots=True)
class RestFault:
    """A REST answer to give instead of the real one: ``kind`` is ``throttle`` or ``error``.

    ``status`` None means the venue's own status for that kind (an error: 503 on Binance,
    200 with an error envelope on Bybit and OKX).
    """

    kind: str
    status: int | None
    retry_after_s: float
    #: only requests whose path contains this (None: any request)
    path: str | None = None


class Faults:
    def __init__(self, target: FaultTarget, stats: Counter[str]) -> None:
        self._target = target
        self._stats = stats
        #: shut while the whole venue stalls (no frames, no pongs, no acks)
        self.gate = Gate()
        self._symbol_stalls: dict[str, float] = {}
        self.rejected: set[str] = set()
        self._skip_final: Counter[str] = Counter()
        self._duplicate_final: Counter[str] = Counter()
        self._skip_targets: set[tuple[str, str, int]] = set()
        self._duplicate_targets: set[tuple[str, str, int]] = set()
        #: close connections this many trio seconds after they open (None: never)
        self.lifetime_s: float | None = None
        #: OKX: seconds between the 64008 notice and the close
        self.notice_lead_s = 1.0
        self._rest: list[RestFault] = []
        #: Binance archive file names (``BTCUSDT-1m-2026-02.zip``) answered with a checksum
        #: that does not match, or with 404
        self.archive_corrupt: set[str] = set()
        self.archive_missing: set[str] = set()

    # ------------------------------------------------------------------ connections

    def drop_connections(self) -> int:
        """Abort every connection (TCP reset, no close frame); returns how many."""
        return self._target.abort_all()

    def close_connections(self, code: int = 1001, reason: str = "going away") -> int:
        return self._target.close_all(code, reason)

    def announce_close(self, after_s: float = 1.0) -> int:
        """OKX: 64008 notice now, close ``after_s`` later; other venues just close."""
        return self._target.announce_close_all(after_s)

    def set_lifetime(self, seconds: float | None, notice_lead_s: float = 1.0) -> None:
        self.lifetime_s = seconds
        self.notice_lead_s = notice_lead_s

    def stall(self, seconds: float | None = None) -> None:
        """Stop sending and reading on every connection (new ones too) for a while."""
        self.gate.close(seconds)

    def clear_stall(self) -> None:
        self.gate.open()

    def send_garbage(self, kind: str = "not_json") -> int:
        return self._target.send_all_nowait(GARBAGE[kind])

    def send_oversized(self, size_bytes: int = OVERSIZED_BYTES) -> int:
        """One well-formed JSON text frame of ``size_bytes`` to every connection (a client
        with a message size limit below it must drop the connection, not its memory)."""
        if size_bytes < 16:
            raise ValueError("size_bytes must be at least 16")
        self._stats["oversized"] += 1
        return self._target.send_all_nowait(b'{"pad":"' + b"x" * (size_bytes - 10) + b'"}')

    # ------------------------------------------------------------------ streams

    def stall_symbol(self, symbol: str, seconds: float | None = None) -> None:
        self._symbol_stalls[symbol] = (
            float("inf") if seconds is None else trio.current_time() + seconds
        )

    def clear_symbol_stall(self, symbol: str) -> None:
        self._symbol_stalls.pop(symbol, None)

    def symbol_stalled(self, symbol: str) -> bool:
        until = self._symbol_stalls.get(symbol)
        return until is not None and trio.current_time() < until

    def reject_symbol(self, symbol: str) -> None:
        self.rejected.add(symbol)

    def accept_symbol(self, symbol: str) -> None:
        self.rejected.discard(symbol)

    def skip_final(self, symbol: str, count: int = 1) -> None:
        """Do not send the closing frame of the next ``count`` candles of ``symbol``."""
        self._skip_final[symbol] += count

    def duplicate_final(self, symbol: str, count: int = 1) -> None:
        self._duplicate_final[symbol] += count

    def final_copies(self, symbol: str, interval: str, open_ms: int) -> int:
        """How many times to send this closing frame: 0 skipped, 2 duplicated, else 1.

        A one-shot fault binds to the first candle it meets, so every connection carrying
        that symbol skips (or repeats) the same candle.
        """
        key = (symbol, interval, open_ms)
        if key in self._skip_targets:
            return 0
        if key in self._duplicate_targets:
            return 2
        if self._skip_final[symbol] > 0:
            self._skip_final[symbol] -= 1
            self._skip_targets.add(key)
            self._stats["skipped_finals"] += 1
            return 0
        if self._duplicate_final[symbol] > 0:
            self._duplicate_final[symbol] -= 1
            self._duplicate_targets.add(key)
            self._stats["duplicated_finals"] += 1
            return 2
        return 1

    # ------------------------------------------------------------------ REST

    def rest_throttle(
        self,
        count: int = 1,
        status: int = 429,
        retry_after_s: float = 1.0,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` REST requests (whose path contains ``path``, if given)
        with the venue's rate-limit response."""
        self._rest.extend([RestFault("throttle", status, retry_after_s, path)] * count)

    def rest_error(
        self, count: int = 1, status: int | None = None, path: str | None = None
    ) -> None:
        """Answer the next ``count`` REST requests (whose path contains ``path``, if given)
        with the venue's error envelope, under the venue's usual status (HTTP 200 on
        Bybit/OKX, 503 on Binance) or ``status``."""
        self._rest.extend([RestFault("error", status, 0.0, path)] * count)

    def next_rest_fault(self, path: str = "") -> RestFault | None:
        """The first armed fault that applies to a request for ``path`` (it is used up)."""
        for index, fault in enumerate(self._rest):
            if fault.path is None or fault.path in path:
                return self._rest.pop(index)
        return None

    # ------------------------------------------------------------------ bulk archive

    def corrupt_archive(self, name: str) -> None:
        """Publish a checksum that does not match archive file ``name`` (Binance only)."""
        self.archive_corrupt.add(name)

    def hide_archive(self, name: str) -> None:
        """Answer 404 for archive file ``name`` and its checksum, as if not published yet."""
        self.archive_missing.add(name)

    # ------------------------------------------------------------------ all at once

    def clear(self) -> None:
        self.gate.open()
        self._symbol_stalls.clear()
        self.rejected.clear()
        self._skip_final.clear()
        self._duplicate_final.clear()
        self._rest.clear()
        self.archive_corrupt.clear()
        self.archive_missing.clear()
        self.lifetime_s = None

    def apply(self, spec: dict[str, Any]) -> object:
        """Run ``{"action": name, **kwargs}``; only the public fault methods are reachable."""
        spec = dict(spec)
        action = spec.pop("action", None)
        if action not in _ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; known: {', '.join(_ACTIONS)}")
        result: object = getattr(self, action)(**spec)
        return result


_ACTIONS = [
    "drop_connections",
    "close_connections",
    "announce_close",
    "set_lifetime",
    "stall",
    "clear_stall",
    "send_garbage",
    "send_oversized",
    "stall_symbol",
    "clear_symbol_stall",
    "reject_symbol",
    "accept_symbol",
    "skip_final",
    "duplicate_final",
    "rest_throttle",
    "rest_error",
    "corrupt_archive",
    "hide_archive",
    "clear",
]
