"""SQLite storage of candles: exact codec, schema, the async writer and the API's reader."""

from feedd.store.database import Database
from feedd.store.reader import CandleRow, Reader, SeriesInfo
from feedd.store.state import WriterStats
from feedd.store.writer import Writer, WriterSettings

__all__ = [
    "CandleRow",
    "Database",
    "Reader",
    "SeriesInfo",
    "Writer",
    "WriterSettings",
    "WriterStats",
]
