"""Simulated data.binance.vision under the Binance venue's ``/archive`` prefix: daily and
monthly kline zips with ``.CHECKSUM`` files, built deterministically from the market's truth.

Rules as on the real site (PROTOCOLS.md section 8): a daily file exists once its day ended
(sim clock), a monthly one once its month ended; a file before the history start, of an
unlisted symbol or of an unknown interval answers 404. Files from 2022 on start with a
header row, older ones do not. Faults can hide a file (404) or corrupt its checksum.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import unquote

from feedd.intervals import DAY_MS, HOUR_MS, MINUTE_MS, floor_open, next_open
from feedd.sim.rest import Response, first_open_at_or_after

if TYPE_CHECKING:
    from feedd.sim.binance_rest import BinanceRest

PREFIX = "/archive"
#: intervals with archive files in the simulator (those feedd's planner asks for)
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
#: files from this year on carry the header row
HEADER_FROM_YEAR = 2022
_CACHE_FILES = 16
_PATH = re.compile(
    r"/data/futures/um/(daily|monthly)/klines/([^/]+)/([^/]+)/"
    r"([^/]+)-([^/]+)-(\d{4}-\d{2}(?:-\d{2})?)\.zip(\.CHECKSUM)?"
)


class SimArchive:
    """The archive of one simulated Binance venue; built files are kept in a small cache."""

    def __init__(self, venue: BinanceRest) -> None:
        self.venue = venue
        self._zips: OrderedDict[str, bytes] = OrderedDict()

    def respond(self, path: str) -> Response:
        """The answer to a GET of ``path`` (below ``PREFIX``)."""
        match = _PATH.fullmatch(unquote(path.removeprefix(PREFIX)))
        if match is None:
            return _not_found()
        period, symbol, interval, name_symbol, name_interval, date, checksum = match.groups()
        span = _span(period, date)
        if (
            span is None
            or (symbol, interval) != (name_symbol, name_interval)
            or interval not in INTERVALS
            or not self.venue.market.listed(symbol)
        ):
            return _not_found()
        name = f"{symbol}-{interval}-{date}.zip"
        start, end = span
        faults = self.venue.faults
        if (
            end > floor_open("1d", self.venue.clock.now_ms())
            or end <= self.venue.first_open(interval)
            or name in faults.archive_missing
        ):
            return _not_found()
        data = self._zip(name, symbol, interval, start, end)
        self.venue.stats["archive_files" if not checksum else "archive_checksums"] += 1
        if checksum:
            digest = hashlib.sha256(data).hexdigest()
            if name in faults.archive_corrupt:
                digest = hashlib.sha256(data + b"corrupt").hexdigest()
            return Response(200, f"{digest}  {name}\n".encode(), (), "text/plain")
        return Response(200, data, (), "application/zip")

    def csv(self, symbol: str, interval: str, start: int, end: int) -> bytes:
        """The CSV of a file covering open times in [start, end): the venue's REST rows."""
        venue, market = self.venue, self.venue.market
        lines = [HEADER] if _year(start) >= HEADER_FROM_YEAR else []
        t = max(first_open_at_or_after(interval, start), venue.first_open(interval))
        while t < end:
            deep = None
            if interval == "1m" and t % HOUR_MS == 0 and t + HOUR_MS <= end:
                deep = venue.deep_minutes(symbol, t)
            if deep is not None:
                # kline_row's columns, the close time being the open's last millisecond
                lines += [
                    f"{m},{o},{h},{lo},{c},{v},{m + MINUTE_MS - 1},{q},{n},{tv},{tq},0"
                    for m, (o, h, lo, c, v, q, n, tv, tq) in deep
                ]
                t += HOUR_MS
                continue
            if market.exists(symbol, t):
                row = venue.kline_row(market.final(symbol, interval, t))
                lines.append(",".join(str(cell) for cell in row))
            t = next_open(interval, t)
        return ("\n".join(lines) + "\n").encode()

    def _zip(self, name: str, symbol: str, interval: str, start: int, end: int) -> bytes:
        cached = self._zips.get(name)
        if cached is not None:
            self._zips.move_to_end(name)
            return cached
        out = io.BytesIO()
        # A fixed timestamp keeps the bytes, and so the checksum, the same on every build.
        info = zipfile.ZipInfo(name.removesuffix(".zip") + ".csv", (2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(out, "w") as archive:
            # Level 1: a month of 1m deflates in ~0.1 s against ~0.5 s at the default 6
            # (1.9 MB against 1.65 MB); the archive's cost is the simulator's, not feedd's.
            archive.writestr(info, self.csv(symbol, interval, start, end), compresslevel=1)
        data = out.getvalue()
        self._zips[name] = data
        if len(self._zips) > _CACHE_FILES:
            self._zips.popitem(last=False)
        return data


def _span(period: str, date: str) -> tuple[int, int] | None:
    """[start, end) of a daily (``YYYY-MM-DD``) or monthly (``YYYY-MM``) file, or None."""
    try:
        if period == "daily" and len(date) == 10:
            day = dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            start = int(day.timestamp() * 1000)
            return start, start + DAY_MS
        if period == "monthly" and len(date) == 7:
            month = dt.datetime.strptime(date, "%Y-%m").replace(tzinfo=dt.UTC)
            start = int(month.timestamp() * 1000)
            return start, next_open("1M", start)
    except ValueError:
        return None
    return None


def _year(t_ms: int) -> int:
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC).year


def _not_found() -> Response:
    # S3 behind the real site answers missing keys with an XML 404.
    return Response(404, b"<Error><Code>NoSuchKey</Code></Error>", (), "application/xml")
