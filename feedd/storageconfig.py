"""The ``storage`` config block: which backend keeps the candles, and where.

``{"backend": "sqlite", "path": "./data/ohlcv.db"}`` is the default (the old top-level
``database_path`` still names the SQLite file); ``{"backend": "postgresql", "dsn":
"postgresql://..."}`` a shared server, the DSN from the file or ``$FEEDD_DATABASE_URL``.
Either takes ``"writer": "process"`` to commit from a child process instead of a thread
(``feedd.store.writeprocess``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from feedd.errors import ConfigError

BACKENDS = ("sqlite", "postgresql")
DSN_ENV = "FEEDD_DATABASE_URL"
DEFAULT_PATH = "./data/ohlcv.db"
_KEYS = {"backend", "path", "dsn", "writer"}
#: where the writer's connection runs: a thread of feedd's process, or a child process
WRITERS = ("thread", "process")
_DSN_SCHEMES = ("postgresql", "postgres")


@attrs.frozen(repr=False)
class StorageConfig:
    backend: str = "sqlite"
    #: the SQLite file, relative to the config file's folder
    path: str = DEFAULT_PATH
    #: the PostgreSQL connection URL (with its password: never logged nor shown)
    dsn: str | None = None
    #: where ``dsn`` came from when not from the config file (never saved into it)
    dsn_source: str | None = None
    #: one of ``WRITERS``
    writer: str = "thread"

    def __repr__(self) -> str:
        return f"StorageConfig(backend={self.backend!r}, where={self.where!r})"

    @property
    def where(self) -> str:
        """The store's location for logs and /config: the DSN without its password."""
        return redacted_dsn(self.dsn or "") if self.backend == "postgresql" else self.path

    def to_json(self, *, redact: bool = False) -> dict[str, Any]:
        """The block as config.json keeps it: a DSN from outside the file stays out of it."""
        out: dict[str, Any] = {"backend": self.backend}
        if self.backend == "sqlite":
            out["path"] = self.path
        elif self.dsn is not None and self.dsn_source is None:
            out["dsn"] = redacted_dsn(self.dsn) if redact else self.dsn
        if self.writer != "thread":
            out["writer"] = self.writer
        return out


def redacted_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (in the URL and as a ``password=``
    query parameter)."""
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    cleaned = [(k, "***" if k.lower() == "password" else v) for k, v in query]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(cleaned, safe="*"))
    )


def parse_storage(
    data: Mapping[str, Any], environ: Mapping[str, str] | None, warnings: list[str]
) -> StorageConfig:
    """The ``storage`` block (or the old ``database_path``) of a config document."""
    environ = os.environ if environ is None else environ
    env_dsn = environ.get(DSN_ENV) or None
    block = data.get("storage")
    legacy = data.get("database_path")
    if block is None:
        path = DEFAULT_PATH if legacy is None else _path("database_path", legacy)
        if env_dsn is not None:
            warnings.append(f"${DSN_ENV} is set but the storage backend is sqlite: ignored")
        return StorageConfig(path=path)
    if not isinstance(block, dict):
        raise ConfigError("storage", 'expected an object such as {"backend": "sqlite"}')
    if legacy is not None:
        raise ConfigError(
            "database_path", "also given by storage: name the database in storage only"
        )
    for key in block:
        if key not in _KEYS:
            warnings.append(f"storage.{key}: unknown key, ignored")
    backend = block.get("backend", "sqlite")
    if backend not in BACKENDS:
        raise ConfigError(
            "storage.backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    writer = block.get("writer", "thread")
    if writer not in WRITERS:
        raise ConfigError("storage.writer", f"expected one of {', '.join(WRITERS)}, got {writer!r}")
    if backend == "sqlite":
        if "dsn" in block:
            warnings.append("storage.dsn: only used with the postgresql backend, ignored")
        if env_dsn is not None:
            warnings.append(f"${DSN_ENV} is set but the storage backend is sqlite: ignored")
        return StorageConfig(
            path=_path("storage.path", block.get("path", DEFAULT_PATH)), writer=writer
        )
    if "path" in block:
        warnings.append("storage.path: only used with the sqlite backend, ignored")
    in_file = block.get("dsn")
    if in_file is not None and env_dsn is not None:
        raise ConfigError("storage.dsn", f"also given by ${DSN_ENV}: keep the DSN in one place")
    if in_file is None and env_dsn is None:
        raise ConfigError(
            "storage.dsn", f"the postgresql backend needs a DSN (in the file or ${DSN_ENV})"
        )
    dsn, source = (in_file, None) if in_file is not None else (env_dsn, f"${DSN_ENV}")
    key = "storage.dsn" if source is None else DSN_ENV
    _check_dsn(key, dsn)
    return StorageConfig(backend="postgresql", dsn=dsn, dsn_source=source, writer=writer)


def _path(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _check_dsn(key: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "expected a postgresql:// URL")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ConfigError(key, f"malformed URL ({exc})") from None
    if parts.scheme not in _DSN_SCHEMES:
        # Never echo the value: it may hold a password.
        raise ConfigError(key, "expected a postgresql://user:password@host:port/database URL")
