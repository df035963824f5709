"""Config loading: seed format accepted, every bad value named by key path, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from feedd import config
from feedd.errors import ConfigError

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
            "positive",
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
    assert config.database_file(cfg, tmp_path / "c.json") == tmp_path / "data" / "ohlcv.db"


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
