"""A small Python client of feedd's candle API: any range of a series as rows, or as a pandas
DataFrame when pandas is installed.

    from feedd.client import FeeddClient

    with FeeddClient("http://127.0.0.1:3000", token=None) as feedd:
        rows = feedd.candles("binance_futures", "BTCUSDT", "1m", since="2024-01-01")
        frame = feedd.dataframe("binance_futures", "BTCUSDT", "1h", since="2024-01-01")

``candles`` pages through ``/ohlcv`` 5,000 rows at a time, following each page's ``Link``;
``dataframe`` downloads the range as one streamed Parquet file. Times are epoch milliseconds,
``datetime`` objects (naive means UTC) or ISO 8601 strings.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

PAGE = 5000
Moment = int | str | dt.datetime | None


class FeeddClientError(Exception):
    """feedd answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def epoch_ms(when: Moment) -> int | None:
    if when is None or isinstance(when, int):
        return when
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


class FeeddClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> FeeddClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def iter_candles(
        self, exchange: str, symbol: str, interval: str, since: Moment = 0, until: Moment = None
    ) -> Iterator[dict[str, Any]]:
        """Candles oldest first, a page at a time: ``open_time`` (ms), the six values as
        floats, ``trades``, ``closed`` and ``source``."""
        params: dict[str, Any] | None = {"since": epoch_ms(since) or 0, "limit": PAGE}
        if until is not None and params is not None:
            params["until"] = epoch_ms(until)
        url: str | None = _path(exchange, symbol, interval)
        while url is not None:
            response = self._http.get(url, params=params)
            _check(response)
            yield from orjson.loads(response.content)
            following = response.links.get("next")
            url, params = (following["url"], None) if following else (None, None)

    def candles(
        self, exchange: str, symbol: str, interval: str, since: Moment = 0, until: Moment = None
    ) -> list[dict[str, Any]]:
        return list(self.iter_candles(exchange, symbol, interval, since, until))

    def dataframe(
        self, exchange: str, symbol: str, interval: str, since: Moment = 0, until: Moment = None
    ) -> Any:
        """The range as a pandas DataFrame indexed by the candles' UTC open time."""
        try:
            import pandas as pd
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("dataframe() needs pandas: pip install pandas") from None
        params: dict[str, Any] = {"format": "parquet", "since": epoch_ms(since) or 0}
        if until is not None:
            params["until"] = epoch_ms(until)
        buffer = io.BytesIO()
        with self._http.stream("GET", _path(exchange, symbol, interval), params=params) as r:
            if r.status_code >= 400:
                r.read()
                _check(r)
            for piece in r.iter_bytes():
                buffer.write(piece)
        frame = pq.read_table(io.BytesIO(buffer.getvalue())).to_pandas()
        frame.index = pd.to_datetime(frame["open_time"], unit="ms", utc=True).rename("time")
        return frame


def _path(exchange: str, symbol: str, interval: str) -> str:
    return "/ohlcv/" + "/".join(quote(p, safe="") for p in (exchange, symbol, interval))


def _check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = orjson.loads(response.content)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = response.text[:200]
    raise FeeddClientError(response.status_code, str(message))
