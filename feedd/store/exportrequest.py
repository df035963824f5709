"""What an export asks for, apart from how it is made: importable without pyarrow, which the
export itself loads only when a client asks for one (it is ~60 MB of feedd's memory)."""

from __future__ import annotations

import attrs

FORMATS = ("csv", "ndjson", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


@attrs.frozen
class ExportRequest:
    exchange: str
    symbol: str
    interval: str
    #: built from stored 1m candles rather than read as stored
    resampled: bool
    format: str
    since: int | None = None
    until: int | None = None
    #: most rows in all (None: the whole range)
    limit: int | None = None
