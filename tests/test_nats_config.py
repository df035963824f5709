"""The ``publish.nats`` config section: defaults, errors naming their key, secrets kept out
of logs and of GET /config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from e2e import running_feedd

from feedd import config
from feedd.config import NatsConfig
from feedd.errors import ConfigError

URL = "nats://feedd:s3cret@127.0.0.1:4222"


def nats(**section: object) -> dict[str, object]:
    return {"publish": {"nats": section}}


def test_absent_publish_means_no_nats() -> None:
    assert config.parse({}).config.publish is None
    repository = config.load(Path(__file__).parent.parent / "config.json").config
    assert repository.publish is None  # the default config stays SQLite only


def test_defaults_and_durations() -> None:
    cfg = config.parse(nats(url=URL, max_age="12h")).config
    assert cfg.publish is not None
    assert cfg.publish.nats == NatsConfig(
        url=URL, max_age=12 * 3600.0, duplicate_window=3600.0, creds=None
    )
    short = config.parse(nats(max_age="30m")).config.publish
    assert short is not None and short.nats is not None
    assert short.nats.duplicate_window == 1800.0  # never longer than max_age


def test_round_trip_keeps_the_section_and_leaves_creds_out() -> None:
    environ = {"FEEDD_NATS_CREDS": "/etc/feedd/nats.creds"}
    cfg = config.parse(nats(url=URL, stream="S", max_age="7d"), environ).config
    assert cfg.publish is not None and cfg.publish.nats is not None
    assert cfg.publish.nats.creds == "/etc/feedd/nats.creds"
    doc = json.loads(json.dumps(cfg.to_json()))
    assert doc["publish"] == {
        "nats": {
            "url": URL,
            "subject_prefix": "feedd",
            "stream": "S",
            "max_age": "7d",
            "duplicate_window": "1h",
        }
    }
    assert config.parse(doc, environ).config == cfg


@pytest.mark.parametrize(
    ("section", "path", "words"),
    [
        ("nats://x", "publish", "expected an object"),
        ({"nats": []}, "publish.nats", "expected an object"),
        ({"nats": {"url": "http://h:4222"}}, "publish.nats.url", "nats://"),
        ({"nats": {"url": 4222}}, "publish.nats.url", "nats://"),
        ({"nats": {"url": "nats://h:4222/x"}}, "publish.nats.url", "nats://"),
        ({"nats": {"subject_prefix": "a..b"}}, "publish.nats.subject_prefix", "tokens"),
        ({"nats": {"subject_prefix": "a.>"}}, "publish.nats.subject_prefix", "tokens"),
        ({"nats": {"stream": "A.B"}}, "publish.nats.stream", "letters"),
        ({"nats": {"max_age": 7}}, "publish.nats.max_age", "duration"),
        ({"nats": {"max_age": "7 days"}}, "publish.nats.max_age", "duration"),
        ({"nats": {"max_age": "5s"}}, "publish.nats.max_age", "between 1m and"),
        ({"nats": {"duplicate_window": "0s"}}, "publish.nats.duplicate_window", "between"),
        (
            {"nats": {"max_age": "1h", "duplicate_window": "2h"}},
            "publish.nats.duplicate_window",
            "max_age",
        ),
    ],
)
def test_bad_values_name_their_key(section: object, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({"publish": section})
    assert info.value.path == path
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_url_error_hides_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(nats(url="nats://feedd:s3cret@h:4222/path"))
    assert "s3cret" not in str(info.value)


def test_unknown_keys_warn_like_the_others() -> None:
    loaded = config.parse({"publish": {"nats": {"url": URL, "colour": 1}, "kafka": {}}})
    assert loaded.warnings == (
        "publish.kafka: unknown key, ignored",
        "publish.nats.colour: unknown key, ignored",
    )


def test_redacted_url() -> None:
    assert config.redacted_url(URL) == "nats://feedd:***@127.0.0.1:4222"
    assert config.redacted_url("nats://tok@h:1") == "nats://***@h:1"
    assert config.redacted_url("nats://h:1") == "nats://h:1"
    assert "s3cret" not in repr(config.parse(nats(url=URL)).config)


async def test_get_config_redacts_and_post_back_keeps_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # An unreachable broker (nothing listens on port 1): feedd runs on, publishing backs off.
    url = "nats://feedd:s3cret@127.0.0.1:1"
    symbols = {"binance_futures": ["BTCUSDT"]}
    async with running_feedd(tmp_path, symbols, publish={"nats": {"url": url}}) as (
        _sim,
        service,
        client,
    ):
        shown = (await client.get("/config")).json()
        assert shown["publish"]["nats"]["url"] == "nats://feedd:***@127.0.0.1:1"
        answer = await client.post("/config", json=shown)
        assert answer.status_code == 200, answer.text
        running = service.state.config.publish
        assert running is not None and running.nats is not None and running.nats.url == url
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["publish"]["nats"]["url"] == url
        status = (await client.get("/status")).json()["nats"]
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert status["connected"] is False and status["url"] == "nats://feedd:***@127.0.0.1:1"
    assert health["nats"]["connected"] is False and health["status"] == "ok"
    assert "feedd_nats_connected 0.0" in metrics
    assert "s3cret" not in json.dumps(status) + caplog.text
