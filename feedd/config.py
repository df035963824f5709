"""Load and validate ``config.json`` into frozen values; every problem names its key path.

The seed's format is accepted as-is and every key is optional. Unknown keys produce
warnings rather than errors so that configs written for newer versions still start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from feedd import exchanges
from feedd.configsource import Secret, external_token
from feedd.errors import ConfigError
from feedd.intervals import is_interval
from feedd.storageconfig import StorageConfig, parse_storage
from feedd.symbols import RULE as SYMBOL_RULE
from feedd.symbols import is_symbol

_URL_PATTERN = re.compile(r"(wss?|https?)://[^\s/?#]+(/[^\s?#]*)?")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_BIND_NAME_PATTERN = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?")
_MAX_SYMBOLS = 5000

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: what a node does: everything, ingest only (a collector), or serve the shared store only
ROLES = ("all", "collector", "api")

# Bounds of every number, each named in its error. Below them a value is never a real need but
# a typo or a unit mistake that turns feedd against the venue or itself: a silence timeout of
# 1e-9 s reconnects forever, an instrument refresh of 1e-300 s sends ~26 REST requests a second.
#: (low, high) seconds per exchange duration key
SECONDS_BOUNDS = {
    # venues force a reconnect after hours (Binance 24 h); a rotation is a new connection
    "connection_lifetime": (60.0, 30 * 86400.0),
    # venues' heartbeats come every 20-180 s, candle updates every second or so
    "silence_timeout": (2.0, 3600.0),
    # listings change a few times a day; each refresh is one REST request
    "instruments_refresh": (60.0, 86400.0),
}
#: integer keys whose 0 means "no limit" (deep history kept by backfill jobs)
UNLIMITED = frozenset({"max_records"})
#: (low, high) per top-level integer key
INTEGER_BOUNDS = {
    # milliseconds between commits: a crash loses at most this much of forming candles
    "batch_interval": (10, 60_000),
    # candles kept per series: 100 daily candles is a real need, 10**9 minutes is 1900 years
    # (0, outside the bounds, keeps everything: see UNLIMITED)
    "max_records": (100, 10**9),
    "bootstrap_load": (0, 10**7),
    "port": (0, 65535),
}


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
class NatsConfig:
    """Where live candles are published: a NATS server with JetStream."""

    #: nats://[user:password@]host:port (tls:// too); the password is never logged or shown
    url: str = attrs.field(default="nats://127.0.0.1:4222", repr=lambda u: repr(redacted_url(u)))
    subject_prefix: str = "feedd"
    stream: str = "FEEDD_CANDLES"
    #: seconds the stream keeps a message
    max_age: float = 7 * 86400.0
    #: seconds within which a closed candle published again (a retry, a second collector)
    #: is stored once
    duplicate_window: float = 3600.0
    #: a creds file (JWT + nkey), from $FEEDD_NATS_CREDS; never saved into the config
    creds: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in attrs.asdict(self).items() if k != "creds"}
        out["max_age"] = duration_text(self.max_age)
        out["duplicate_window"] = duration_text(self.duplicate_window)
        return out


@attrs.frozen
class PublishConfig:
    nats: NatsConfig | None = None

    def to_json(self) -> dict[str, Any]:
        return {} if self.nats is None else {"nats": self.nats.to_json()}


@attrs.frozen
class Config:
    exchanges: Mapping[str, ExchangeConfig] = attrs.field(
        factory=lambda: {name: ExchangeConfig(name) for name in exchanges.REGISTRY}
    )
    intervals: tuple[str, ...] = ("1m",)
    #: where candles are kept (the old top-level ``database_path`` names the SQLite file)
    storage: StorageConfig = attrs.Factory(StorageConfig)
    #: milliseconds between writer commits
    batch_interval: int = 50
    max_records: int = 100_000
    bootstrap_load: int = 10_000
    port: int = 3000
    host: str = "127.0.0.1"
    #: the token API clients must present; from the config file or from outside it
    api_token: str | None = None
    #: extra host names the API answers to (besides loopback names and ``host``)
    allowed_hosts: tuple[str, ...] = ()
    #: where ``api_token`` came from when not from the config file (never saved into it)
    api_token_source: str | None = None
    #: live candles leave the process here too (None: nowhere but /ws)
    publish: PublishConfig | None = None
    #: one of ROLES; read at start
    role: str = "all"

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
        out["storage"] = self.storage.to_json()
        out["allowed_hosts"] = list(self.allowed_hosts)
        if self.publish is not None:
            out["publish"] = self.publish.to_json()
        if out.pop("api_token_source") is not None:
            # A token from the environment or a credential stays out of the file.
            del out["api_token"]
        return {k: v for k, v in out.items() if v is not None}


@attrs.frozen
class Loaded:
    config: Config
    warnings: tuple[str, ...]


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Loaded:
    """Read and validate a config file; a missing file is an error, not a silent default."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"config file {os.fspath(path)!r} not found") from None
    except OSError as exc:
        problem = f"cannot read config file {os.fspath(path)!r}: {exc.strerror}"
        raise ConfigError("", problem) from None
    try:
        data = json.loads(raw, object_pairs_hook=_Object, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ConfigError("", f"{os.fspath(path)} is not valid JSON: {exc}") from None
    loaded = parse(data, environ)
    return Loaded(loaded.config, (*_duplicates(data, ""), *loaded.warnings))


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers the keys it saw twice: the last value counts, as
    in every JSON parser, and a warning tells the operator the other one was dropped."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated: list[str] = []
        if len(self) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.repeated.append(key)
                seen.add(key)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _duplicates(value: object, path: str) -> Iterator[str]:
    if isinstance(value, _Object):
        for key in dict.fromkeys(value.repeated):
            yield f"{_join(path, key)}: duplicate key, the last value counts"
        for key, inner in value.items():
            yield from _duplicates(inner, _join(path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _duplicates(inner, f"{path}[{index}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse(data: object, environ: Mapping[str, str] | None = None) -> Loaded:
    """Validate an already-decoded config document with every rule startup applies.

    ``environ`` (default ``os.environ``) is where a token from outside the file is looked up.
    """
    warnings: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError("", "the config must be a JSON object")
    defaults = Config()
    known = {f.name for f in attrs.fields(Config)} - {"api_token_source"} | {"database_path"}
    for key in data:
        if key not in known:
            warnings.append(f"{key}: unknown key, ignored")

    intervals = _intervals(data.get("intervals", list(defaults.intervals)))
    token = _token(_optional_string(data, "api_token"), external_token(environ))
    config = Config(
        exchanges=_exchanges(data.get("exchanges"), intervals, warnings),
        intervals=intervals,
        storage=parse_storage(data, environ, warnings),
        batch_interval=_integer(data, "batch_interval", defaults.batch_interval),
        max_records=_integer(data, "max_records", defaults.max_records),
        bootstrap_load=_integer(data, "bootstrap_load", defaults.bootstrap_load),
        port=_integer(data, "port", defaults.port),
        host=_bind_host(data, defaults.host),
        api_token=token.value if token else None,
        api_token_source=token.source if token else None,
        allowed_hosts=_host_names(data.get("allowed_hosts", [])),
        publish=_publish(data.get("publish"), environ, warnings),
        role=_role(data.get("role", defaults.role)),
    )
    check_exposure(config)
    return Loaded(config, tuple(warnings))


def _token(in_file: str | None, outside: Secret | None) -> Secret | None:
    """The API token comes from one place: two would leave an operator guessing which one
    is in force, and a forgotten one is a lockout or an open door."""
    if outside is None:
        return None if in_file is None else Secret(in_file, None)
    if in_file is not None:
        raise ConfigError(
            "api_token", f"also given by {outside.source}: keep the token in one place"
        )
    return outside


def check_exposure(config: Config) -> None:
    """Binding beyond loopback without a token would hand the API to the network."""
    try:
        loopback = config.host == "localhost" or ipaddress.ip_address(config.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.api_token:
        raise ConfigError(
            "host",
            f"binding {config.host} (not loopback) requires api_token (in the config, "
            "$FEEDD_API_TOKEN or the systemd credential api_token)",
        )


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


def _role(value: object) -> str:
    if value not in ROLES:
        names = ", ".join(f'"{name}"' for name in ROLES)
        raise ConfigError("role", f"expected one of {names}, got {value!r}")
    return str(value)


def _integer(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    low, high = INTEGER_BOUNDS[key]
    if value == 0 and key in UNLIMITED:
        return value
    if not low <= value <= high:
        unlimited = "0 (no limit) or " if key in UNLIMITED else ""
        raise ConfigError(key, f"must be {unlimited}between {low} and {high}, got {value}")
    return value


def _string(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _bind_host(data: dict[str, Any], default: str) -> str:
    value = _string(data, "host", default)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _BIND_NAME_PATTERN.fullmatch(value):
            raise ConfigError(
                "host", f"expected an IP address or a host name to bind, got {value!r}"
            ) from None
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
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{path}.{key}", f"expected a number of seconds, got {value!r}")
    low, high = SECONDS_BOUNDS[key]
    # Written so that NaN fails too.
    if not low <= value <= high:
        raise ConfigError(
            f"{path}.{key}",
            f"must be between {_number(low)} and {_number(high)} seconds, got {_number(value)}",
        )
    return float(value)


def _number(value: float) -> str:
    """60 rather than 60.0 or 6e+01; 1e-09 stays short; a 400-digit integer is cut."""
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


_NATS_URL = re.compile(r"(nats|tls)://([^\s/?#@]+@)?[^\s/?#@:]+(:\d{1,5})?")
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: (low, high) seconds of publish.nats durations
NATS_DURATION_BOUNDS = {"max_age": (60.0, 3650 * 86400.0), "duplicate_window": (1.0, 7 * 86400.0)}


def _publish(
    value: object, environ: Mapping[str, str] | None, warnings: list[str]
) -> PublishConfig | None:
    """``publish``: absent means no NATS at all (the default stays SQLite only)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("publish", 'expected an object such as {"nats": {"url": ...}}')
    for key in value:
        if key != "nats":
            warnings.append(f"publish.{key}: unknown key, ignored")
    nats = value.get("nats")
    if nats is None:
        return PublishConfig()
    path = "publish.nats"
    if not isinstance(nats, dict):
        raise ConfigError(path, "expected an object of url, subject_prefix, stream, max_age")
    allowed = {f.name for f in attrs.fields(NatsConfig)} - {"creds"}
    for key in nats:
        if key not in allowed:
            warnings.append(f"{path}.{key}: unknown key, ignored")
    defaults = NatsConfig()
    url = nats.get("url", defaults.url)
    if not isinstance(url, str) or not _NATS_URL.fullmatch(url):
        raise ConfigError(
            f"{path}.url",
            f"expected nats://[user:password@]host[:port] (or tls://), got {redacted_url(url)!r}",
        )
    prefix = nats.get("subject_prefix", defaults.subject_prefix)
    if not isinstance(prefix, str) or not all(
        _SUBJECT_TOKEN.fullmatch(token) for token in prefix.split(".")
    ):
        raise ConfigError(
            f"{path}.subject_prefix",
            f"expected dot-separated tokens of letters, digits, _ and -, got {prefix!r}",
        )
    stream = nats.get("stream", defaults.stream)
    if not isinstance(stream, str) or not _STREAM_NAME.fullmatch(stream):
        raise ConfigError(
            f"{path}.stream", f"expected a name of letters, digits, _ and -, got {stream!r}"
        )
    max_age = _duration(nats, "max_age", path, defaults.max_age)
    window = _duration(nats, "duplicate_window", path, min(defaults.duplicate_window, max_age))
    if window > max_age:
        raise ConfigError(f"{path}.duplicate_window", "must not be longer than max_age")
    creds = (environ if environ is not None else os.environ).get("FEEDD_NATS_CREDS") or None
    return PublishConfig(NatsConfig(url, prefix, stream, max_age, window, creds))


def _duration(settings: dict[str, Any], key: str, path: str, default: float) -> float:
    value = settings.get(key)
    if value is None:
        return default
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{path}.{key}", f'expected a duration such as "90s", "30m", "12h", "7d", got {value!r}'
        )
    seconds = float(int(match[1]) * _DURATION_S[match[2]])
    low, high = NATS_DURATION_BOUNDS[key]
    if not low <= seconds <= high:
        raise ConfigError(
            f"{path}.{key}",
            f"must be between {duration_text(low)} and {duration_text(high)}, got {value}",
        )
    return seconds


def duration_text(seconds: float) -> str:
    """The largest unit that divides ``seconds`` exactly: 604800 -> "7d"."""
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole % _DURATION_S[unit] == 0:
            return f"{whole // _DURATION_S[unit]}{unit}"
    return f"{whole}s"


def redacted_url(url: object) -> object:
    """``url`` with its password replaced by ***: safe to log and to show in GET /config."""
    if not isinstance(url, str) or "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    userinfo, _, host = rest.rpartition("@")
    if not sep:
        return url
    # nats://user:password@host, or nats://token@host where the whole userinfo is the secret
    user = f"{userinfo.partition(':')[0]}:" if ":" in userinfo else ""
    return f"{scheme}://{user}***@{host}"


def restore_nats_url(data: dict[str, Any], running: Config) -> None:
    """A config posted back from GET /config carries the redacted URL: keep the real one."""
    nats = data.get("publish", {}).get("nats") if isinstance(data.get("publish"), dict) else None
    current = running.publish.nats if running.publish else None
    if not isinstance(nats, dict) or current is None:
        return
    if nats.get("url") == redacted_url(current.url) != current.url:
        nats["url"] = current.url


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


def config_folder(config_path: str | os.PathLike[str]) -> Path:
    """Where relative paths in the config (the SQLite file) are taken from."""
    return Path(config_path).resolve().parent
