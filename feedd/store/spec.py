"""A store named in one word, as ``feedd migrate`` takes it: ``sqlite:PATH`` or a PostgreSQL
URL, read into the storage config that ``open_backend`` opens."""

from __future__ import annotations

from pathlib import Path

from feedd.errors import ConfigError
from feedd.storageconfig import StorageConfig, parse_storage

#: the forms, for messages
SPEC_FORMS = "sqlite:PATH or postgresql://user:password@host:port/database"
_URL_SCHEMES = ("postgresql", "postgres")


def parse_spec(text: str) -> StorageConfig:
    """``text`` as a storage config; ``ConfigError`` without a key (the caller names its
    option) that never echoes a URL, which may hold a password."""
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]  # sqlite:///abs/path, the URL form
        if not path:
            raise ConfigError("", "sqlite: needs a file, as in sqlite:./data/ohlcv.db")
        return StorageConfig(path=str(Path(path).absolute()))
    if text.split(":", 1)[0] in _URL_SCHEMES:
        try:
            return parse_storage({"storage": {"backend": _URL_SCHEMES[0], "dsn": text}}, {}, [])
        except ConfigError as exc:
            raise ConfigError("", exc.problem) from None
    raise ConfigError("", f"expected {SPEC_FORMS}")
