"""The ``storage`` config block: backends, the old ``database_path``, DSNs kept secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedd import config
from feedd.errors import ConfigError
from feedd.storageconfig import DSN_ENV, StorageConfig, redacted_dsn
from feedd.store.backend import open_backend

DSN = "postgresql://feedd:s3cret@db.lan:5432/candles"


def parse(doc: dict[str, object], env: dict[str, str] | None = None) -> config.Loaded:
    return config.parse(doc, environ=env or {})


def test_default_is_sqlite_in_data() -> None:
    assert parse({}).config.storage == StorageConfig("sqlite", "./data/ohlcv.db")


def test_old_database_path_names_the_sqlite_file() -> None:
    assert parse({"database_path": "x.db"}).config.storage == StorageConfig("sqlite", "x.db")


def test_storage_block_and_database_path_together_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"database_path": "x.db", "storage": {"backend": "sqlite", "path": "y.db"}})
    assert info.value.path == "database_path"


@pytest.mark.parametrize(
    ("block", "path", "words"),
    [
        ("sqlite", "storage", "expected an object"),
        ({"backend": "mysql"}, "storage.backend", "sqlite, postgresql"),
        ({"backend": "sqlite", "path": ""}, "storage.path", "non-empty"),
        ({"backend": "postgresql"}, "storage.dsn", DSN_ENV),
        ({"backend": "postgresql", "dsn": "mysql://u:pw@h/db"}, "storage.dsn", "postgresql://"),
        ({"backend": "postgresql", "dsn": "postgresql://h:port/db"}, "storage.dsn", "malformed"),
        ({"backend": "sqlite", "writer": "fork"}, "storage.writer", "thread, process"),
        ({"backend": "postgresql", "dsn": DSN, "writer": 1}, "storage.writer", "got 1"),
    ],
)
def test_bad_storage_names_its_key(block: object, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"storage": block})
    assert info.value.path == path
    assert words in str(info.value)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    "block",
    [{"backend": "sqlite", "path": "x.db"}, {"backend": "postgresql", "dsn": DSN}],
)
def test_writer_process_round_trips_and_wraps_the_backend(
    block: dict[str, str], tmp_path: Path
) -> None:
    plain = parse({"storage": block}).config
    cfg = parse({"storage": {**block, "writer": "process"}}).config
    assert (plain.storage.writer, cfg.storage.writer) == ("thread", "process")
    assert cfg.to_json()["storage"] == {**block, "writer": "process"}
    assert "writer" not in plain.to_json()["storage"]  # the default stays implicit
    assert parse(json.loads(json.dumps(cfg.to_json()))).config == cfg
    wrapped, inner = open_backend(cfg.storage, tmp_path), open_backend(plain.storage, tmp_path)
    assert (wrapped.writer_apart, inner.writer_apart) == (True, False)
    assert (wrapped.kind, wrapped.location) == (inner.kind, inner.location)
    assert wrapped.same_store(inner) and wrapped.same_store(wrapped)


def test_postgresql_dsn_from_file_round_trips() -> None:
    cfg = parse({"storage": {"backend": "postgresql", "dsn": DSN}}).config
    assert cfg.storage.dsn == DSN
    assert cfg.to_json()["storage"] == {"backend": "postgresql", "dsn": DSN}
    assert parse(json.loads(json.dumps(cfg.to_json()))).config == cfg


def test_dsn_from_the_environment_stays_out_of_the_file() -> None:
    cfg = parse({"storage": {"backend": "postgresql"}}, {DSN_ENV: DSN}).config
    assert (cfg.storage.dsn, cfg.storage.dsn_source) == (DSN, f"${DSN_ENV}")
    assert cfg.to_json()["storage"] == {"backend": "postgresql"}


def test_dsn_in_two_places_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"storage": {"backend": "postgresql", "dsn": DSN}}, {DSN_ENV: DSN})
    assert "one place" in str(info.value)


def test_environment_dsn_with_sqlite_warns() -> None:
    loaded = parse({}, {DSN_ENV: DSN})
    assert loaded.config.storage.backend == "sqlite"
    assert any(DSN_ENV in w for w in loaded.warnings)


def test_password_never_in_repr_or_location() -> None:
    cfg = parse({"storage": {"backend": "postgresql", "dsn": DSN + "?password=x2"}}).config
    assert "s3cret" not in repr(cfg) and "x2" not in repr(cfg)
    assert "s3cret" not in cfg.storage.where
    assert redacted_dsn(DSN) == "postgresql://feedd:***@db.lan:5432/candles"
    assert redacted_dsn("postgresql://h/db?password=x2&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )


def test_sqlite_path_relative_to_config_folder(tmp_path: Path) -> None:
    cfg = parse({"storage": {"backend": "sqlite", "path": "d/x.db"}}).config
    assert open_backend(cfg.storage, tmp_path).location == str(tmp_path / "d" / "x.db")
