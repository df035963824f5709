"""Config loading: seed format accepted, every bad value named by key path, exit status 2."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from feedd import config, configsource
from feedd.errors import ConfigError
from feedd.service import Service, run_service
from feedd.store.backend import open_backend


@pytest.fixture(autouse=True)
def no_outside_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEEDD_API_TOKEN", "CREDENTIALS_DIRECTORY", "FEEDD_CONFIG"):
        monkeypatch.delenv(name, raising=False)


SEED = {
    "exchanges": {
        "binance_futures": {"symbols": ["BTCUSDT", "ETHUSDT"], "enabled": True},
    },
    "intervals": ["1m"],
    "database_path": "./data/ohlcv.db",
    "batch_interval": 60000,
    "max_records": 100000,
    "bootstrap_load": 10000,
    "port": 3000,
}


def test_seed_format_is_accepted_as_is() -> None:
    loaded = config.parse(SEED)
    assert loaded.warnings == ()
    cfg = loaded.config
    assert cfg.exchanges["binance_futures"].symbols == ("BTCUSDT", "ETHUSDT")
    assert cfg.batch_interval == 60000
    assert cfg.host == "127.0.0.1"


def test_every_key_has_a_default() -> None:
    cfg = config.parse({}).config
    assert cfg.intervals == ("1m",)
    assert cfg.port == 3000
    assert all(ex.enabled for ex in cfg.exchanges.values())


def test_repository_config_is_valid() -> None:
    loaded = config.load(Path(__file__).parent.parent / "config.json")
    assert loaded.warnings == ()
    assert loaded.config.batch_interval <= 100  # p99 frame-to-commit target needs short batches


@pytest.mark.parametrize(
    ("patch", "path", "words"),
    [
        ({"exchanges": {"kraken": {}}}, "exchanges.kraken", "unknown exchange"),
        (
            {"exchanges": {"binance_futures": {"symbols": ["btcusdt"]}}},
            "exchanges.binance_futures.symbols[0]",
            "malformed symbol",
        ),
        (
            {"exchanges": {"binance_futures": {"symbols": "BTCUSDT"}}},
            "exchanges.binance_futures.symbols",
            "list",
        ),
        (
            {"exchanges": {"binance_futures": {"enabled": "yes"}}},
            "exchanges.binance_futures.enabled",
            "true or false",
        ),
        (
            {"exchanges": {"binance_futures": {"ws_url": "ftp://x"}}},
            "exchanges.binance_futures.ws_url",
            "URL",
        ),
        (
            {"exchanges": {"binance_futures": {"connection_lifetime": -1}}},
            "exchanges.binance_futures.connection_lifetime",
            "between 60 and 2592000 seconds, got -1",
        ),
        ({"intervals": ["7m"]}, "intervals[0]", "unknown interval"),
        ({"intervals": []}, "intervals", "non-empty"),
        ({"batch_interval": -5}, "batch_interval", "between"),
        ({"max_records": "many"}, "max_records", "integer"),
        ({"bootstrap_load": True}, "bootstrap_load", "integer"),
        ({"port": 70000}, "port", "between"),
        ({"database_path": ""}, "database_path", "non-empty"),
    ],
)
def test_bad_values_name_their_key(patch: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({**SEED, **patch})
    assert info.value.path == path
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_keys_warn_but_load() -> None:
    loaded = config.parse(
        {
            **SEED,
            "colour": "blue",
            "exchanges": {"binance_futures": {"symbols": ["BTCUSDT"], "x": 1}},
        }
    )
    assert loaded.warnings == (
        "colour: unknown key, ignored",
        "exchanges.binance_futures.x: unknown key, ignored",
    )


def test_duplicate_symbols_collapse_in_order() -> None:
    cfg = config.parse(
        {"exchanges": {"binance_futures": {"symbols": ["ETHUSDT", "BTCUSDT", "ETHUSDT"]}}}
    ).config
    assert cfg.exchanges["binance_futures"].symbols == ("ETHUSDT", "BTCUSDT")


def test_round_trip_through_json() -> None:
    cfg = config.parse(SEED).config
    assert config.parse(json.loads(json.dumps(cfg.to_json()))).config == cfg


def test_database_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config.parse({}).config
    store = open_backend(cfg.storage, config.config_folder(tmp_path / "c.json"))
    assert store.location == str(tmp_path / "data" / "ohlcv.db")


def run_feedd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedd", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"port": "x"}', "feedd: config error: port: expected an integer, got 'x'"),
        ("{nope", "is not valid JSON"),
        ('{"exchanges": {"kraken": {}}}', "feedd: config error: exchanges.kraken: unknown"),
        ('{"host": "0.0.0.0"}', "requires api_token"),
    ],
)
def test_cli_refuses_bad_config_with_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    result = run_feedd("--config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_missing_config_file(tmp_path: Path) -> None:
    result = run_feedd("--config", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert "not found" in result.stderr


def test_cli_help_lists_options() -> None:
    result = run_feedd("--help")
    assert result.returncode == 0
    for option in ("--config", "--host", "--port", "--log-level"):
        assert option in result.stdout


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        # Each of these passed before bounds existed, and each hurts: reconnect loops, REST
        # floods, a rotation every second.
        ("silence_timeout", 1e-9, "between 2 and 3600 seconds, got 1e-09"),
        ("silence_timeout", 86400 * 365, "between 2 and 3600 seconds"),
        ("instruments_refresh", 1e-300, "between 60 and 86400 seconds, got 1e-300"),
        ("instruments_refresh", 0.5, "between 60 and 86400 seconds"),
        ("connection_lifetime", 0.001, "between 60 and 2592000 seconds, got 0.001"),
        ("connection_lifetime", 1e12, "between 60 and 2592000 seconds"),
        ("silence_timeout", "5", "expected a number of seconds"),
        # float() of it raised OverflowError, a traceback instead of a config error
        ("silence_timeout", 10**400, "got 100000000000... (401 digits)"),
        ("silence_timeout", float("nan"), "got nan"),
    ],
)
def test_durations_have_sane_bounds(key: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({"exchanges": {"okx_futures": {key: value}}})
    assert info.value.path == f"exchanges.okx_futures.{key}"
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("batch_interval", 1, "between 10 and 60000"),
        ("batch_interval", 3_600_000, "between 10 and 60000"),
        ("max_records", 1, "0 (no limit) or between 100 and 1000000000"),
        ("max_records", 10**10, "0 (no limit) or between 100 and 1000000000"),
        ("bootstrap_load", 10**8, "between 0 and 10000000"),
        ("port", -1, "between 0 and 65535"),
    ],
)
def test_numbers_have_sane_bounds(key: str, value: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({key: value})
    assert info.value.path == key
    assert words in str(info.value)


def test_bounds_themselves_are_accepted() -> None:
    for key, (low, high) in config.SECONDS_BOUNDS.items():
        for value in (low, high):
            doc = {"exchanges": {"bybit_futures": {key: value}}}
            assert getattr(config.parse(doc).config.exchanges["bybit_futures"], key) == value
    for key, (low, high) in config.INTEGER_BOUNDS.items():
        for value in (low, high):
            assert getattr(config.parse({key: value}).config, key) == value


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_numbers_in_a_file_are_not_json(tmp_path: Path, constant: str) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"exchanges": {"okx_futures": {"silence_timeout": ' + constant + "}}}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load(path)


@pytest.mark.parametrize("host", ["-x", "a" * 64 + ".lan", "a..b", "[::1]", "two words", ""])
def test_bind_host_must_be_an_address_or_a_name(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({"host": host, "api_token": "t"})
    assert info.value.path == "host"


# ----------------------------------------------------------------------------- duplicate keys


def test_duplicate_keys_warn_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"port": 1, "port": 2, "exchanges": {"okx_futures": {"enabled": true,'
        ' "symbols": ["BTCUSDT"], "enabled": false}}, "colour": "red"}'
    )
    loaded = config.load(path)
    assert loaded.warnings == (
        "port: duplicate key, the last value counts",
        "exchanges.okx_futures.enabled: duplicate key, the last value counts",
        "colour: unknown key, ignored",
    )
    assert loaded.config.port == 2
    assert loaded.config.exchanges["okx_futures"].enabled is False


# ----------------------------------------------------------------------------- token sources


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDD_API_TOKEN", "from-env")
    cfg = config.parse({"host": "0.0.0.0"}).config  # satisfies the non-loopback rule
    assert cfg.api_token == "from-env"
    assert cfg.api_token_source == "$FEEDD_API_TOKEN"
    # Never written into the file a config change saves.
    assert "api_token" not in cfg.to_json()
    assert "from-env" not in repr(cfg.to_json())


def test_token_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "api_token").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = config.parse({"host": "0.0.0.0"}).config
    assert cfg.api_token == "from-credential"  # the file's newline is not part of it
    assert cfg.api_token_source == "the systemd credential api_token"
    assert "api_token" not in cfg.to_json()


def test_a_credential_folder_without_the_token_is_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert config.parse({}).config.api_token is None


@pytest.mark.parametrize(
    ("file_token", "env", "credential", "words"),
    [
        ("in-file", "in-env", None, "api_token: also given by $FEEDD_API_TOKEN"),
        ("in-file", None, "in-cred", "api_token: also given by the systemd credential"),
        (None, "in-env", "in-cred", "given both by the systemd credential api_token and $FEEDD"),
        (None, None, "  \n", "is empty"),
    ],
)
def test_the_token_comes_from_one_place(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_token: str | None,
    env: str | None,
    credential: str | None,
    words: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("FEEDD_API_TOKEN", env)
    if credential is not None:
        (tmp_path / "api_token").write_text(credential)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    doc = {} if file_token is None else {"api_token": file_token}
    with pytest.raises(ConfigError) as info:
        config.parse(doc)
    assert info.value.path == "api_token"
    assert words in str(info.value)
    for secret in ("in-file", "in-env", "in-cred"):
        assert secret not in str(info.value)


def test_non_loopback_without_any_token_names_every_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=r"requires api_token .*\$FEEDD_API_TOKEN"):
        config.parse({"host": "0.0.0.0"})


# ----------------------------------------------------------------------------- lookup


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEEDD_CONFIG", raising=False)
    etc = Path("/etc/feedd/config.json")
    if etc.exists():
        assert configsource.find_config(None).path == etc
    else:
        with pytest.raises(ConfigError, match=r"no config file: tried config\.json and /etc"):
            configsource.find_config(None)
    (tmp_path / "config.json").write_text("{}")
    assert configsource.find_config(None) == configsource.Found(Path("config.json"), "default")
    monkeypatch.setenv("FEEDD_CONFIG", "/srv/env.json")
    assert configsource.find_config(None) == configsource.Found(
        Path("/srv/env.json"), "$FEEDD_CONFIG"
    )
    assert configsource.find_config("given.json") == configsource.Found(
        Path("given.json"), "--config"
    )


# ----------------------------------------------------------------------------- POST /config


@asynccontextmanager
async def serving(tmp_path: Path, doc: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """feedd (ingest off) run from a config file that POST /config rewrites."""
    cfg = config.parse(doc).config
    path = tmp_path / "config.json"
    config.save(path, cfg)
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            functools.partial(run_service, cfg, tmp_path / "ohlcv.db", config_path=path)
        )
        headers = {"Authorization": f"Bearer {cfg.api_token}"} if cfg.api_token else {}
        try:
            async with httpx.AsyncClient(
                base_url=service.url, timeout=30, headers=headers
            ) as client:
                yield client
        finally:
            service.stop.set()


QUIET = {"exchanges": {"binance_futures": {"enabled": False}}, "port": 0}


async def test_post_config_refuses_what_startup_would_refuse(tmp_path: Path) -> None:
    async with serving(tmp_path, QUIET) as client:
        before = (tmp_path / "config.json").read_bytes()
        doc = (await client.get("/config")).json()
        # Accepted before, saved, and then the next start exited with status 2.
        response = await client.post("/config", json={**doc, "host": "0.0.0.0"})
        assert response.status_code == 400, response.text
        assert response.json()["field"] == "host"
        assert "requires api_token" in response.json()["error"]
        for bad in (
            {"batch_interval": 1},
            {"exchanges": {"okx_futures": {"silence_timeout": 1e-9}}},
        ):
            refused = await client.post("/config", json={**doc, **bad})
            assert refused.status_code == 400, bad
        assert (tmp_path / "config.json").read_bytes() == before
    # What was saved still starts.
    config.load(tmp_path / "config.json")


async def test_post_config_with_a_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDD_API_TOKEN", "env-secret")
    async with serving(tmp_path, QUIET) as client:
        doc = (await client.get("/config")).json()
        assert "api_token" not in doc
        # Binding everywhere is fine: the token from the environment protects it.
        response = await client.post("/config", json={**doc, "host": "0.0.0.0"})
        assert response.status_code == 200, response.text
        assert response.json()["restart_required"] == ["host"]
        # Two tokens would leave the operator guessing which one is in force.
        twice = await client.post("/config", json={**doc, "api_token": "another"})
        assert twice.status_code == 400 and twice.json()["field"] == "api_token"
    saved = (tmp_path / "config.json").read_text()
    assert "env-secret" not in saved and "api_token" not in saved
    assert config.load(tmp_path / "config.json").config.host == "0.0.0.0"


async def test_get_config_hides_the_dsn_password_and_post_keeps_it(tmp_path: Path) -> None:
    dsn = "postgresql://feedd:pg-secret@db.lan:5432/candles"
    # The running store is SQLite (run_service is handed it); only the config names PG.
    doc = {**QUIET, "storage": {"backend": "postgresql", "dsn": dsn}}
    async with serving(tmp_path, doc) as client:
        shown = (await client.get("/config")).json()
        assert shown["storage"] == {
            "backend": "postgresql",
            "dsn": "postgresql://feedd:***@db.lan:5432/candles",
        }
        response = await client.post("/config", json={**shown, "max_records": 5000})
        assert response.status_code == 200, response.text
        assert "storage" not in response.json()["restart_required"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["storage"]["dsn"] == dsn
