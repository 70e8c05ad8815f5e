"""Settings: env prefix, local-stack discovery, readable errors naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import DriftloopSettings, ServiceSettings, load_settings
from shared.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(name)


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("DRIFTLOOP_PORT", "8123")
    settings = load_settings(ServiceSettings)
    assert settings.resolved_bootstrap() == "kafka:9092"
    assert settings.port == 8123


def test_malformed_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_PORT", "eighty")
    with pytest.raises(ConfigError, match="DRIFTLOOP_PORT: Input should be a valid integer"):
        load_settings(ServiceSettings)


def test_minio_requires_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_STORE_KIND", "minio")
    monkeypatch.setenv("DRIFTLOOP_STORE_ENDPOINT", "minio:9000")
    monkeypatch.setenv("DRIFTLOOP_STORE_ACCESS_KEY", "driftloop")
    with pytest.raises(ConfigError, match="DRIFTLOOP_STORE_SECRET_KEY"):
        load_settings(DriftloopSettings)


def test_secret_is_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_STORE_KIND", "minio")
    monkeypatch.setenv("DRIFTLOOP_STORE_ENDPOINT", "minio:9000")
    monkeypatch.setenv("DRIFTLOOP_STORE_ACCESS_KEY", "driftloop")
    monkeypatch.setenv("DRIFTLOOP_STORE_SECRET_KEY", "hunter2-very-secret")
    settings = load_settings(DriftloopSettings)
    assert "hunter2" not in repr(settings)
    assert settings.store_secret_key is not None
    assert settings.store_secret_key.get_secret_value() == "hunter2-very-secret"


def test_no_broker_anywhere_says_what_to_do(tmp_path: Path) -> None:
    settings = load_settings(DriftloopSettings, data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"DRIFTLOOP_KAFKA_BOOTSTRAP.*driftloop up --data-dir"):
        settings.resolved_bootstrap()


def test_local_stack_is_found_through_endpoints_file(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(
        json.dumps({"kafka_bootstrap": "127.0.0.1:39092", "kafka_idempotence": False, "store": {"root": "/x/store"}})
    )
    settings = load_settings(DriftloopSettings, data_dir=tmp_path)
    assert settings.resolved_bootstrap() == "127.0.0.1:39092"
    assert settings.resolved_idempotence() is False
    assert settings.resolved_store_root() == Path("/x/store")


def test_explicit_settings_beat_the_local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:39092"}))
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "kafka:9092")
    settings = load_settings(DriftloopSettings, data_dir=tmp_path)
    assert settings.resolved_bootstrap() == "kafka:9092"
    assert settings.resolved_idempotence() is True


def test_corrupt_endpoints_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text("{half")
    settings = load_settings(DriftloopSettings, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="endpoints.json is unreadable"):
        settings.resolved_bootstrap()
