"""Binance's bulk archive (data.binance.vision), sans-IO: which kline zips cover a range, and
how to read their CSV and ``.CHECKSUM`` files. Protocol facts: PROTOCOLS.md section 8.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

from feedd.candle import Candle, Source
from feedd.errors import ParseError
from feedd.exchanges import fields as f
from feedd.exchanges.contract import ArchiveFile
from feedd.intervals import DAY_MS, INTERVAL_MS, floor_open, next_open

NAME = "binance_futures"
DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
_ROOT = "/data/futures/um"

#: intervals with both daily and monthly files; a candle longer than a day does not fit a
#: daily file, and which monthly file holds a week straddling two months is unconfirmed
ARCHIVE_INTERVALS: frozenset[str] = frozenset(
    ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
)
#: a month's file is asked for only this long after the month ended (Binance publishes it
#: "early in the next month"); until then its days come from daily files
MONTHLY_LAG_MS = 7 * DAY_MS
#: a timestamp at or above this is in microseconds (in ms it would be past the year 5000)
_MICROS_FROM = 10**14
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def archive_files(
    symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int
) -> list[ArchiveFile]:
    """Monthly files for months ended at least ``MONTHLY_LAG_MS`` ago, daily files for the
    days of later months up to yesterday (UTC), oldest first, covering ``start_ms`` ..
    ``end_ms``. Today's candles, and intervals outside ``ARCHIVE_INTERVALS``, are REST's."""
    if interval not in ARCHIVE_INTERVALS or end_ms < start_ms:
        return []
    today = floor_open("1d", now_ms)
    files = []
    month = floor_open("1M", start_ms)
    while month <= end_ms and month < today:
        month_end = next_open("1M", month)
        if month_end + MONTHLY_LAG_MS <= now_ms:
            files.append(_file(symbol, interval, "monthly", month, month_end, "%Y-%m"))
        else:
            day = max(month, floor_open("1d", start_ms))
            while day < month_end and day <= end_ms and day + DAY_MS <= today:
                files.append(_file(symbol, interval, "daily", day, day + DAY_MS, "%Y-%m-%d"))
                day += DAY_MS
        month = month_end
    return files


def _file(symbol: str, interval: str, period: str, start: int, end: int, fmt: str) -> ArchiveFile:
    date = dt.datetime.fromtimestamp(start / 1000, tz=dt.UTC).strftime(fmt)
    native = quote(symbol, safe="")
    path = f"{_ROOT}/{period}/klines/{native}/{interval}/{native}-{interval}-{date}.zip"
    return ArchiveFile(path, path + ".CHECKSUM", start, end - INTERVAL_MS[interval])


def checksum_of(text: str) -> str:
    """The digest of a ``.CHECKSUM`` file (``<sha256 hex>  <file name>``), lowercased."""
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    if not _SHA256.fullmatch(digest):
        raise ParseError(f"checksum file does not start with a SHA-256 digest: {text[:100]!r}")
    return digest.lower()


def parse_archive_csv(data: bytes, symbol: str, interval: str) -> list[Candle]:
    """The rows of a kline CSV (the columns of ``/fapi/v1/klines``, with or without a header
    row, times in ms or µs) as closed ARCHIVE candles, oldest first."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ParseError(f"archive CSV is not UTF-8: {exc}") from None
    if lines and not lines[0].split(",", 1)[0].strip().isdigit():
        lines = lines[1:]  # the header row of files from 2022 on
    candles = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            candles.append(_row(line, number, symbol, interval))
    candles.sort(key=lambda c: c.open_time)
    return candles


#: the CSV columns of the six values and their names in errors
_VALUES = ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume"), (7, "quote volume"))


def _row(line: str, number: int, symbol: str, interval: str) -> Candle:
    cells = line.split(",")
    if " " in line or "\t" in line:
        cells = [cell.strip() for cell in cells]
    if len(cells) < 9:
        raise ParseError(f"archive CSV row {number} has {len(cells)} fields, expected 12")
    open_time = _time(cells[0], number)
    if floor_open(interval, open_time) != open_time:
        raise ParseError(
            f"archive CSV row {number}: open time {open_time} is not a {interval} open"
        )
    if not cells[8].isascii() or not cells[8].isdigit():
        raise ParseError(f"archive CSV row {number}: trade count {cells[8]!r}")
    # A month is 44,640 rows: ``fields.decimal`` (and the name its error needs) only for a
    # value the cheap test (ASCII digits with one inner dot at most) does not settle.
    for column, name in _VALUES:
        v = cells[column]
        if not (
            0 < len(v) <= 40
            and v.isascii()
            and v[0] != "."
            and v[-1] != "."
            and v.replace(".", "", 1).isdigit()
        ):
            f.decimal(v, f"row {number} {name}")
    return Candle(
        NAME, symbol, interval, open_time, cells[1], cells[2], cells[3], cells[4], cells[5],
        cells[7], int(cells[8]), True, Source.ARCHIVE,
    )  # fmt: skip


def _time(cell: str, number: int) -> int:
    if not cell.isascii() or not cell.isdigit() or len(cell) > 18:
        raise ParseError(f"archive CSV row {number}: open time {cell!r}")
    value = int(cell)
    if value < _MICROS_FROM:
        return value
    if value % 1000:
        raise ParseError(f"archive CSV row {number}: open time {cell} µs is not a whole ms")
    return value // 1000
