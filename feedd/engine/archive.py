"""Closed candles from a venue's bulk archive: download each planned file, check its SHA-256
against the published checksum, unzip and parse it in a worker thread, yield it in time order.

Interface (used by the backfill jobs)::

    async def fetch_archive(
        module: ExchangeModule, http: httpx.AsyncClient, base_url: str,
        symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int,
    ) -> AsyncIterator[ArchiveBatch]

``module.ARCHIVE`` must not be None. One ``ArchiveBatch`` per planned file, oldest first:
``first_open_ms`` .. ``last_open_ms`` is the file's range clipped to ``start_ms`` ..
``end_ms``; ``candles`` are its closed candles in that range (source ARCHIVE). A batch with
``published`` False (HTTP 404) or an ``error`` (bad checksum, zip, CSV, too large) has no
candles: the caller fetches that range over REST. Open times after the last batch (today,
or an interval the archive lacks: no batch at all) are REST's too. Network failures raise
TransportError, HTTP 429/418 RateLimited, other HTTP errors ExchangeError: the caller retries.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
import zlib
from collections.abc import AsyncIterator

import attrs
import httpx
import trio

from feedd.candle import Candle
from feedd.errors import ArchiveError, ExchangeError, ParseError, RateLimited, TransportError
from feedd.exchanges.contract import ArchiveFile, ArchiveLayout, ExchangeModule
from feedd.intervals import floor_open, next_open

TIMEOUT_S = 60.0


@attrs.frozen(slots=True)
class ArchiveBatch:
    """One archive file's share of the asked range."""

    file: ArchiveFile
    #: the open times this batch accounts for: the file's range clipped to the asked one
    first_open_ms: int
    last_open_ms: int
    #: closed candles in that range, oldest first (a venue outage leaves holes in the file too)
    candles: list[Candle]
    #: False: the file is not published (HTTP 404)
    published: bool = True
    #: why a published file was not used
    error: ArchiveError | None = None

    @property
    def ok(self) -> bool:
        return self.published and self.error is None


async def fetch_archive(
    module: ExchangeModule,
    http: httpx.AsyncClient,
    base_url: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    now_ms: int,
) -> AsyncIterator[ArchiveBatch]:
    """The archive's candles of one series in ``start_ms`` .. ``end_ms``, a file at a time
    (see the module docstring)."""
    layout = module.ARCHIVE
    if layout is None:
        raise ArchiveError(module.NAME, "this venue publishes no bulk archive")
    base = base_url.rstrip("/")
    first = _first_open_at_or_after(interval, start_ms)
    for file in layout.files(symbol, interval, start_ms, end_ms, now_ms):
        lo, hi = max(file.first_open_ms, first), min(file.last_open_ms, end_ms)
        if lo > hi:
            continue
        try:
            candles = await _read(layout, http, base, file, symbol, interval)
        except ArchiveError as exc:
            yield ArchiveBatch(file, lo, hi, [], error=exc)
            continue
        if candles is None:
            yield ArchiveBatch(file, lo, hi, [], published=False)
            continue
        yield ArchiveBatch(file, lo, hi, [c for c in candles if lo <= c.open_time <= hi])


async def _read(
    layout: ArchiveLayout,
    http: httpx.AsyncClient,
    base: str,
    file: ArchiveFile,
    symbol: str,
    interval: str,
) -> list[Candle] | None:
    """The file's candles; None when it (or its checksum) is not published."""
    checksum = await _download(http, base + file.checksum_path, file, 4096)
    if checksum is None:
        return None
    try:
        expected = layout.checksum_of(checksum.decode("utf-8", "replace"))
    except ParseError as exc:
        raise ArchiveError(file.name, f"bad checksum file: {exc}") from None
    data = await _download(http, base + file.path, file, layout.max_file_bytes)
    if data is None:
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ArchiveError(file.name, f"SHA-256 {digest} does not match the published {expected}")
    read = functools.partial(_unzip_and_parse, layout, data, file.name, symbol, interval)
    return await trio.to_thread.run_sync(read)


async def _download(
    http: httpx.AsyncClient, url: str, file: ArchiveFile, limit: int
) -> bytes | None:
    """The body of a GET, at most ``limit`` bytes; None on 404."""
    try:
        async with http.stream("GET", url, timeout=TIMEOUT_S) as response:
            status = response.status_code
            if status == 404:
                return None
            if status in (418, 429):
                raise RateLimited(str(status), f"archive {url}: slow down", _seconds(response))
            if status != 200:
                raise ExchangeError(str(status), f"archive {url}: HTTP {status}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ArchiveError(file.name, f"{declared} bytes is over the {limit} byte limit")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ArchiveError(file.name, f"more than the {limit} byte limit")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise TransportError(f"archive {url}: {exc!r}") from None


def _unzip_and_parse(
    layout: ArchiveLayout, data: bytes, name: str, symbol: str, interval: str
) -> list[Candle]:
    """Runs in a worker thread: the one CSV inside the zip, parsed."""
    limit = layout.max_file_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1:
                raise ArchiveError(name, f"holds {len(members)} files, expected one CSV")
            if members[0].file_size > limit:
                raise ArchiveError(name, f"unzips to more than the {limit} byte limit")
            with archive.open(members[0]) as member:
                text = member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise ArchiveError(name, f"not a readable zip: {exc}") from None
    if len(text) > limit:
        raise ArchiveError(name, f"unzips to more than the {limit} byte limit")
    try:
        return layout.parse_csv(text, symbol, interval)
    except ParseError as exc:
        raise ArchiveError(name, str(exc)) from None


def _first_open_at_or_after(interval: str, t_ms: int) -> int:
    opened = floor_open(interval, t_ms)
    return opened if opened >= t_ms else next_open(interval, opened)


def _seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
