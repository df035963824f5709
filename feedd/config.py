"""Load and validate ``config.json`` into frozen values; every problem names its key path.

The seed's format is accepted as-is and every key is optional. Unknown keys produce
warnings rather than errors so that configs written for newer versions still start.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from feedd import exchanges
from feedd.errors import ConfigError
from feedd.intervals import is_interval
from feedd.symbols import RULE as SYMBOL_RULE
from feedd.symbols import is_symbol

_URL_PATTERN = re.compile(r"(wss?|https?)://[^\s/?#]+(/[^\s?#]*)?")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?")
_MAX_SYMBOLS = 5000

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")


@attrs.frozen
class ExchangeConfig:
    """One venue's settings; URLs and timings left None fall back to the module's defaults."""

    name: str
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    enabled: bool = True
    ws_url: str | None = None
    rest_url: str | None = None
    #: base URL of the venue's bulk archive (None: the module's ``ARCHIVE.default_url``)
    archive_url: str | None = None
    #: seconds before the venue's forced disconnect at which to rotate (None: module's limit)
    connection_lifetime: float | None = None
    #: seconds without any frame before a connection is presumed dead (None: module default)
    silence_timeout: float | None = None
    #: seconds between refreshes of the venue's instrument list
    instruments_refresh: float = 600.0


@attrs.frozen
class Config:
    exchanges: Mapping[str, ExchangeConfig] = attrs.field(
        factory=lambda: {name: ExchangeConfig(name) for name in exchanges.REGISTRY}
    )
    intervals: tuple[str, ...] = ("1m",)
    database_path: str = "./data/ohlcv.db"
    #: milliseconds between writer commits
    batch_interval: int = 50
    max_records: int = 100_000
    bootstrap_load: int = 10_000
    port: int = 3000
    host: str = "127.0.0.1"
    api_token: str | None = None
    #: extra host names the API answers to (besides loopback names and ``host``)
    allowed_hosts: tuple[str, ...] = ()

    def enabled_exchanges(self) -> list[ExchangeConfig]:
        return [ex for ex in self.exchanges.values() if ex.enabled]

    def to_json(self) -> dict[str, Any]:
        """The config as ``config.json`` writes it (None values left out)."""
        out: dict[str, Any] = attrs.asdict(self, recurse=False)
        out["exchanges"] = {
            name: {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in attrs.asdict(ex).items()
                if k != "name" and v is not None
            }
            for name, ex in self.exchanges.items()
        }
        out["intervals"] = list(self.intervals)
        out["allowed_hosts"] = list(self.allowed_hosts)
        return {k: v for k, v in out.items() if v is not None}


@attrs.frozen
class Loaded:
    config: Config
    warnings: tuple[str, ...]


def load(path: str | os.PathLike[str]) -> Loaded:
    """Read and validate a config file; a missing file is an error, not a silent default."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"config file {os.fspath(path)!r} not found") from None
    except OSError as exc:
        problem = f"cannot read config file {os.fspath(path)!r}: {exc.strerror}"
        raise ConfigError("", problem) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError("", f"{os.fspath(path)} is not valid JSON: {exc}") from None
    return parse(data)


def parse(data: object) -> Loaded:
    """Validate an already-decoded config document."""
    warnings: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError("", "the config must be a JSON object")
    defaults = Config()
    known = {f.name for f in attrs.fields(Config)}
    for key in data:
        if key not in known:
            warnings.append(f"{key}: unknown key, ignored")

    intervals = _intervals(data.get("intervals", list(defaults.intervals)))
    config = Config(
        exchanges=_exchanges(data.get("exchanges"), intervals, warnings),
        intervals=intervals,
        database_path=_string(data, "database_path", defaults.database_path),
        batch_interval=_integer(data, "batch_interval", defaults.batch_interval, 1, 3_600_000),
        max_records=_integer(data, "max_records", defaults.max_records, 0, 10**10),
        bootstrap_load=_integer(data, "bootstrap_load", defaults.bootstrap_load, 0, 10**7),
        port=_integer(data, "port", defaults.port, 0, 65535),
        host=_string(data, "host", defaults.host),
        api_token=_optional_string(data, "api_token"),
        allowed_hosts=_host_names(data.get("allowed_hosts", [])),
    )
    return Loaded(config, tuple(warnings))


def _exchanges(
    value: object, intervals: tuple[str, ...], warnings: list[str]
) -> dict[str, ExchangeConfig]:
    if value is None:
        return dict(Config().exchanges)
    if not isinstance(value, dict):
        raise ConfigError("exchanges", "expected an object of exchange name -> settings")
    result = {}
    for name, settings in value.items():
        path = f"exchanges.{name}"
        if name not in exchanges.REGISTRY:
            known = ", ".join(sorted(exchanges.REGISTRY))
            raise ConfigError(path, f"unknown exchange (known: {known})")
        if not isinstance(settings, dict):
            raise ConfigError(path, "expected an object")
        allowed = {f.name for f in attrs.fields(ExchangeConfig)} - {"name"}
        for key in settings:
            if key not in allowed:
                warnings.append(f"{path}.{key}: unknown key, ignored")
        enabled = settings.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path}.enabled", f"expected true or false, got {enabled!r}")
        module = exchanges.get(name)
        if "archive_url" in settings and module.ARCHIVE is None:
            warnings.append(f"{path}.archive_url: {name} has no bulk archive, ignored")
        for interval in intervals:
            if interval not in module.INTERVALS:
                raise ConfigError("intervals", f"{name} does not offer the {interval} interval")
        result[name] = ExchangeConfig(
            name=name,
            symbols=_symbols(settings.get("symbols", list(DEFAULT_SYMBOLS)), f"{path}.symbols"),
            enabled=enabled,
            ws_url=_url(settings, "ws_url", path, ("ws", "wss")),
            rest_url=_url(settings, "rest_url", path, ("http", "https")),
            archive_url=_url(settings, "archive_url", path, ("http", "https")),
            connection_lifetime=_seconds(settings, "connection_lifetime", path),
            silence_timeout=_seconds(settings, "silence_timeout", path),
            instruments_refresh=_seconds(settings, "instruments_refresh", path) or 600.0,
        )
    return result


def _symbols(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, 'expected a list of symbols such as "BTCUSDT"')
    if len(value) > _MAX_SYMBOLS:
        raise ConfigError(path, f"at most {_MAX_SYMBOLS} symbols per exchange")
    seen: dict[str, None] = {}
    for index, symbol in enumerate(value):
        if not is_symbol(symbol):
            raise ConfigError(f"{path}[{index}]", f"malformed symbol {symbol!r} ({SYMBOL_RULE})")
        seen[symbol] = None  # keeps order, drops repeats
    return tuple(seen)


def _intervals(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("intervals", 'expected a non-empty list such as ["1m"]')
    for index, interval in enumerate(value):
        if not isinstance(interval, str) or not is_interval(interval):
            raise ConfigError(
                f"intervals[{index}]",
                f"unknown interval {interval!r} (known: 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d "
                "3d 1w 1M)",
            )
    return tuple(dict.fromkeys(value))


def _host_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError("allowed_hosts", 'expected a list of host names such as ["feedd.lan"]')
    for index, name in enumerate(value):
        if not isinstance(name, str) or not _HOST_PATTERN.fullmatch(name):
            raise ConfigError(f"allowed_hosts[{index}]", f"not a host name: {name!r}")
    return tuple(dict.fromkeys(name.lower() for name in value))


def _integer(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(key, f"must be between {low} and {high}, got {value}")
    return value


def _string(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return _string(data, key, "")


def _url(settings: dict[str, Any], key: str, path: str, schemes: tuple[str, ...]) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    match = _URL_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1) not in schemes:
        raise ConfigError(
            f"{path}.{key}", f"expected a {'/'.join(schemes)} URL without query, got {value!r}"
        )
    return str(value).rstrip("/")


def _seconds(settings: dict[str, Any], key: str, path: str) -> float | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{path}.{key}", f"expected a positive number of seconds, got {value!r}")
    return float(value)


def save(path: str | os.PathLike[str], config: Config) -> None:
    """Write ``config`` so that readers see the old file or the new one, never a torn one:
    a temp file in the same folder, flushed to disk, then renamed over the original."""
    target = Path(path)
    data = orjson.dumps(config.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        # The rename is durable only once the directory entry is.
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def database_file(config: Config, config_path: str | os.PathLike[str]) -> Path:
    """The database path, relative paths taken from the config file's folder."""
    path = Path(config.database_path)
    return path if path.is_absolute() else Path(config_path).resolve().parent / path
